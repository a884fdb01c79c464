//! What the screens share: number, time and duration formats, clipping, bordered blocks,
//! sparkline tiles, tables with a marked selection, and list titles (counts, sort order).
use ratatui::Frame;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::widgets::{Block, BorderType, Borders, Paragraph, Row, Sparkline, Table, TableState};

use super::Theme;
use crate::app::{App, List};

pub(super) fn age(now_ms: i64, then_ms: i64) -> String {
    let s = (now_ms.saturating_sub(then_ms).max(0) / 1000) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d", s / 86_400),
    }
}

pub(super) fn pct(v: Option<f64>) -> String {
    v.map(|x| format!("{:.1}%", x * 100.0))
        .unwrap_or_else(|| "-".into())
}

pub(super) fn num(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// A duration for people: `45 ms`, `2.4 s`, `15m12s`, `2h05m`.
pub(super) fn dur(ms: f64) -> String {
    let ms = ms.max(0.0);
    if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.1} s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0).round() as u64;
        if s < 3600 {
            format!("{}m{:02}s", s / 60, s % 60)
        } else {
            format!("{}h{:02}m", s / 3600, s % 3600 / 60)
        }
    }
}

/// `2026-11-21 18:02:11` (or with a `T`) as `11-21 18:02:11`.
pub(super) fn short_time(t: &str) -> String {
    let t: String = t.chars().skip(5).take(14).collect();
    t.replacen('T', " ", 1)
}

pub(super) fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(n.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}

pub(super) fn block(title: &str, focused: bool) -> Block<'static> {
    let b = Block::default().borders(Borders::ALL);
    if focused {
        b.border_type(BorderType::Double)
            .title(format!("▶ {title}"))
            .title_style(Style::default().add_modifier(Modifier::BOLD))
    } else {
        b.title(title.to_string())
    }
}

pub(super) fn tile(
    f: &mut Frame<'_>,
    area: Rect,
    title: &str,
    value: String,
    data: &[u64],
    theme: Theme,
) {
    let b = block(title, false);
    let inner = b.inner(area);
    f.render_widget(b, area);
    if inner.height == 0 {
        return;
    }
    f.render_widget(
        Paragraph::new(value).style(Style::default().add_modifier(Modifier::BOLD)),
        Rect { height: 1, ..inner },
    );
    if inner.height > 1 {
        let spark = Rect {
            y: inner.y + 1,
            height: inner.height - 1,
            ..inner
        };
        let bars = fit(data, spark.width as usize);
        f.render_widget(
            Sparkline::default()
                .data(&bars)
                .style(theme.fg(Color::Cyan)),
            spark,
        );
    }
}

/// The whole series in `width` bars: consecutive points share a bar, which shows their highest
/// value (so a spike is never averaged away); a series narrower than `width` is drawn as is.
pub(super) fn fit(data: &[u64], width: usize) -> Vec<u64> {
    if width == 0 || data.len() <= width {
        return data.to_vec();
    }
    (0..width)
        .map(|i| {
            let (from, to) = (i * data.len() / width, (i + 1) * data.len() / width);
            data[from..to.max(from + 1)]
                .iter()
                .copied()
                .max()
                .unwrap_or(0)
        })
        .collect()
}

pub(super) fn scaled(values: impl Iterator<Item = f64>, scale: f64) -> Vec<u64> {
    values
        .map(|v| (v.max(0.0) * scale).round() as u64)
        .collect()
}

/// A table's columns: header and width.
pub(super) type Columns<'c> = &'c [(&'static str, Constraint)];

/// A table with a bold header, the selected row marked with `>` (and reversed) when focused.
pub(super) fn table(
    f: &mut Frame<'_>,
    area: Rect,
    title: String,
    focused: bool,
    columns: Columns<'_>,
    rows: Vec<Row<'_>>,
    selected: usize,
) {
    let n = rows.len();
    let t = Table::new(rows, columns.iter().map(|c| c.1))
        .header(
            Row::new(columns.iter().map(|c| c.0))
                .style(Style::default().add_modifier(Modifier::BOLD)),
        )
        .block(block(&title, focused))
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ");
    let mut state = TableState::default();
    if focused && n > 0 {
        state.select(Some(selected.min(n - 1)));
    }
    f.render_stateful_widget(t, area, &mut state);
}

/// A drill-down's row count, `500+` when the server's answer was cut at the limit.
pub(super) fn count(n: usize) -> String {
    if n >= crate::app::DRILL_LIMIT {
        format!("{n}+")
    } else {
        n.to_string()
    }
}

/// ` · by KEY` when a list is not in its default order.
pub(super) fn sorted(app: &App, list: List) -> String {
    let key = app.sort_key_of(list);
    if key == list.sort_keys()[0] {
        String::new()
    } else {
        format!(" · by {key}")
    }
}

#[cfg(test)]
mod tests {
    use super::fit;

    #[test]
    fn a_series_fits_its_width_keeping_spikes() {
        let hour: Vec<u64> = (0..60).map(|m| if m == 37 { 90 } else { 1 }).collect();
        let bars = fit(&hour, 11);
        assert_eq!(bars.len(), 11);
        assert_eq!(bars.iter().filter(|b| **b == 90).count(), 1);
        assert_eq!(fit(&[3, 4], 11), [3, 4]);
        assert_eq!(fit(&(0..120).collect::<Vec<u64>>(), 4), [29, 59, 89, 119]);
    }
}
