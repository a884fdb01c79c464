//! The dashboard's state, keys and frames: pure functions, fixture data, a fake clock, ratatui's
//! `TestBackend` and insta snapshots at 80×24 and 120×40 (with and without colour).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use custos_tui::app::{App, Connection, Effect, Mode, Pane, Screen};
use custos_tui::data::{
    DecisionRow, Point, ReviewRow, RunRow, SloRow, Snapshot, Status, WorkflowRow,
};
use custos_tui::ui::{Theme, draw};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const NOW: i64 = 1_795_300_000_000;

fn fixture() -> Snapshot {
    Snapshot {
        status: Status {
            version: "0.1.0".into(),
            uptime_seconds: 3600,
            spans_accepted: 120_000,
            memtable_rows: 4_200,
            flushes: 12,
            last_flush_unix: Some((NOW / 1000 - 7) as u64),
            policy_hash: Some("bfec3366402dabcdef".into()),
            workflows: Some(vec!["invoice-processing".into(), "support-triage".into()]),
            pending_reviews: Some(3),
            ..Status::default()
        },
        workflows: vec![
            WorkflowRow {
                workflow: "invoice-processing".into(),
                runs: 1500,
                success_rate: Some(0.919),
                p99_ms: Some(322.0),
                error_rate: Some(0.014),
                override_rate: Some(0.122),
                cost_per_success: Some(0.00118),
            },
            WorkflowRow {
                workflow: "support-triage".into(),
                runs: 1500,
                success_rate: Some(0.927),
                p99_ms: Some(236.0),
                error_rate: Some(0.0),
                override_rate: Some(0.146),
                cost_per_success: Some(0.00125),
            },
        ],
        series: (0..24)
            .map(|h| Point {
                key: format!("2026-11-21T{h:02}"),
                runs: (100 + h * 7 % 40) as f64,
                p99_ms: (200 + h * 13 % 90) as f64,
                error_rate: 0.01 * (h % 3) as f64,
                override_rate: 0.1 + 0.01 * (h % 5) as f64,
                cost_per_success: 0.001 + 0.0001 * (h % 4) as f64,
            })
            .collect(),
        drift_psi: Some(0.064),
        slos: vec![
            SloRow {
                name: "run-latency".into(),
                objective_percent: 99.0,
                budget_left: Some(1.0),
                burn: Some(0.0),
                status: "ok".into(),
            },
            SloRow {
                name: "run-success".into(),
                objective_percent: 95.0,
                budget_left: Some(0.98),
                burn: Some(0.2),
                status: "ok".into(),
            },
            SloRow {
                name: "override-rate".into(),
                objective_percent: 90.0,
                budget_left: Some(-0.32),
                burn: Some(1.32),
                status: "ticket".into(),
            },
            SloRow {
                name: "cost-per-success".into(),
                objective_percent: 99.0,
                budget_left: Some(0.976),
                burn: Some(0.02),
                status: "ok".into(),
            },
        ],
        reviews: vec![
            ReviewRow {
                id: "run-a1-review".into(),
                workflow: "invoice-processing".into(),
                queue: "ap-team".into(),
                priority: "high".into(),
                created_ms: NOW - 3_900_000,
                confidence: Some(0.71),
                label: Some("extracted".into()),
            },
            ReviewRow {
                id: "run-b2-review".into(),
                workflow: "support-triage".into(),
                queue: "support-team".into(),
                priority: "normal".into(),
                created_ms: NOW - 120_000,
                confidence: Some(0.64),
                label: Some("urgent".into()),
            },
            ReviewRow {
                id: "run-c3-review".into(),
                workflow: "support-triage".into(),
                queue: "support-team".into(),
                priority: "low".into(),
                created_ms: NOW - 5_000,
                confidence: Some(0.42),
                label: Some("low".into()),
            },
        ],
        decisions: vec![
            DecisionRow {
                seq: 5969,
                time: "2026-11-21T20:24:15".into(),
                kind: "gate".into(),
                principal: "Custos::Service::\"ci\"".into(),
                action: "deploy".into(),
                resource: "Custos::Workflow::\"invoice-processing\"".into(),
                decision: "deny".into(),
                policies: "deploy-override-rate-regressed".into(),
            },
            DecisionRow {
                seq: 5968,
                time: "2026-11-21T20:24:15".into(),
                kind: "gate".into(),
                principal: "Custos::Service::\"ci\"".into(),
                action: "deploy".into(),
                resource: "Custos::Workflow::\"support-triage\"".into(),
                decision: "allow".into(),
                policies: "deploy-by-ci-or-owner".into(),
            },
            DecisionRow {
                seq: 5967,
                time: "2026-11-21T20:24:14".into(),
                kind: "authorize".into(),
                principal: "Custos::Service::\"executor\"".into(),
                action: "execute".into(),
                resource: "Custos::Connector::\"ledger\"".into(),
                decision: "deny".into(),
                policies: "execute-large-amount-needs-human".into(),
            },
        ],
        runs: vec![
            RunRow {
                run_id: "run-a1".into(),
                workflow: "invoice-processing".into(),
                outcome: "in_progress".into(),
                duration_ms: None,
                start_time: "2026-11-21T19:55:00".into(),
            },
            RunRow {
                run_id: "run-z9".into(),
                workflow: "support-triage".into(),
                outcome: "success".into(),
                duration_ms: Some(45.0),
                start_time: "2026-11-21T19:54:59".into(),
            },
            RunRow {
                run_id: "run-y8".into(),
                workflow: "invoice-processing".into(),
                outcome: "compensated".into(),
                duration_ms: Some(1250.0),
                start_time: "2026-11-21T19:54:58".into(),
            },
        ],
        audit: "5969 record(s), chain intact; last record 5969 (e2fcf73befeb6c6a)".into(),
    }
}

fn key(c: char) -> KeyEvent {
    KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE)
}

fn code(c: KeyCode) -> KeyEvent {
    KeyEvent::new(c, KeyModifiers::NONE)
}

fn app() -> App {
    let mut a = App::new("http://127.0.0.1:4380", NOW - 5_000);
    a.update(
        Snapshot {
            status: Status {
                spans_accepted: 100_000,
                ..Status::default()
            },
            ..fixture()
        },
        NOW - 5_000,
    );
    a.update(fixture(), NOW);
    a
}

fn frame(a: &App, w: u16, h: u16, color: bool) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| draw(f, a, Theme { color })).unwrap();
    t.backend().to_string()
}

#[test]
fn ingest_rate_comes_from_two_polls_and_a_lost_server_keeps_the_data() {
    let mut a = app();
    assert_eq!(a.ingest_rate, Some(4000.0));
    a.lost("connection refused".into(), NOW + 2_000);
    a.lost("connection refused".into(), NOW + 9_000);
    assert_eq!(
        a.connection,
        Connection::Lost {
            since_ms: NOW + 2_000,
            error: "connection refused".into()
        }
    );
    assert!(a.snapshot.is_some());
    let f = frame(&a, 120, 40, false);
    assert!(f.contains("LOST 7s ago, retrying"), "{f}");
    a.update(fixture(), NOW + 10_000);
    assert_eq!(a.connection, Connection::Connected);
}

#[test]
fn keys_switch_screens_move_filter_freeze_and_quit() {
    let mut a = app();
    assert_eq!(a.key(key('4')), Effect::None);
    assert_eq!(a.screen, Screen::Reviews);
    a.key(key('j'));
    a.key(key('j'));
    a.key(key('j'));
    assert_eq!(a.selection(), 2, "clamped to the last row");
    // New data keeps the selection.
    a.update(fixture(), NOW + 1000);
    assert_eq!(a.selection(), 2);
    a.key(key('/'));
    assert_eq!(a.mode, Mode::Filter);
    for c in "invoice".chars() {
        a.key(key(c));
    }
    a.key(code(KeyCode::Enter));
    assert_eq!(a.rows(), 1);
    assert_eq!(a.selection(), 0);
    a.key(code(KeyCode::Esc));
    assert_eq!(a.filter, "");
    a.key(code(KeyCode::Esc));
    assert_eq!(a.screen, Screen::Overview);
    a.key(code(KeyCode::Tab));
    assert_eq!(a.pane, Pane::Reviews);
    a.key(code(KeyCode::BackTab));
    a.key(code(KeyCode::BackTab));
    assert_eq!(a.pane, Pane::Denials);
    assert_eq!(a.rows(), 2, "denials only");
    a.key(key('f'));
    let mut changed = fixture();
    changed.reviews.clear();
    a.update(changed.clone(), NOW + 2000);
    assert_eq!(a.snapshot.as_ref().unwrap().reviews.len(), 3, "frozen");
    a.key(key('f'));
    a.update(changed, NOW + 3000);
    assert!(a.snapshot.as_ref().unwrap().reviews.is_empty());
    assert_eq!(a.key(key('t')), Effect::Refresh);
    assert_eq!(a.range(), "24h");
    assert_eq!(a.key(key('r')), Effect::Refresh);
    a.key(key(':'));
    for c in "audit".chars() {
        a.key(key(c));
    }
    a.key(code(KeyCode::Enter));
    assert_eq!(a.screen, Screen::Audit);
    a.key(key(':'));
    a.key(key('x'));
    a.key(code(KeyCode::Enter));
    assert!(
        a.message
            .as_deref()
            .unwrap()
            .contains("unknown command `x`")
    );
    a.key(key('?'));
    for c in "freeze".chars() {
        a.key(key(c));
    }
    assert_eq!(a.help_lines().len(), 1);
    a.key(code(KeyCode::Esc));
    assert_eq!(a.mode, Mode::Normal);
    assert_eq!(a.key(key('q')), Effect::Quit);
    assert_eq!(
        a.key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        Effect::Quit
    );
}

#[test]
fn overview_frames() {
    let a = app();
    insta::assert_snapshot!("overview_80x24", frame(&a, 80, 24, true));
    insta::assert_snapshot!("overview_120x40", frame(&a, 120, 40, true));
    // Without colour the frame's text is the same: focus and selection are marked by borders and
    // `>` alone.
    let plain = frame(&a, 80, 24, false);
    insta::assert_snapshot!("overview_80x24_no_color", plain);
    assert!(plain.contains("▶ SLOs"));
}

#[test]
fn every_screen_and_the_help_render_at_80x24() {
    let mut a = app();
    for (k, name) in [
        ('2', "slos"),
        ('3', "runs"),
        ('4', "reviews"),
        ('5', "decisions"),
        ('6', "audit"),
    ] {
        a.key(key(k));
        insta::assert_snapshot!(format!("screen_{name}_80x24"), frame(&a, 80, 24, true));
    }
    a.key(key('?'));
    insta::assert_snapshot!("help_80x24", frame(&a, 80, 24, true));
    // Smaller than 60×12: a summary, no panic.
    let small = frame(&a, 40, 10, true);
    assert!(small.contains("enlarge"), "{small}");
}
