//! The dashboard's state, keys and frames: pure functions, fixture data, a fake clock, ratatui's
//! `TestBackend` and insta snapshots at 80×24 and 120×40 (with and without colour).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use custos_tui::app::{
    App, Connection, Decide, Detail, Effect, Mode, Pane, Request, Screen, Stage,
};
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
            redactions: Some(1_234),
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
                cost_usd: Some(0.0007),
                start_time: "2026-11-21T19:55:00".into(),
            },
            RunRow {
                run_id: "run-z9".into(),
                workflow: "support-triage".into(),
                outcome: "success".into(),
                duration_ms: Some(45.0),
                cost_usd: Some(0.0011),
                start_time: "2026-11-21T19:54:59".into(),
            },
            RunRow {
                run_id: "run-y8".into(),
                workflow: "invoice-processing".into(),
                outcome: "compensated".into(),
                duration_ms: Some(1250.0),
                cost_usd: Some(0.0021),
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
    // A poll that did not re-verify the audit chain keeps the last verification.
    a.update(
        Snapshot {
            audit: String::new(),
            ..fixture()
        },
        NOW + 12_000,
    );
    assert_eq!(a.snapshot.as_ref().unwrap().audit, fixture().audit);
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

/// Feeds a key script: single characters, or `<enter>`, `<esc>`, `<tab>`, `<bs>` between spaces;
/// returns the effects that were not `None`.
fn script(a: &mut App, keys: &str) -> Vec<Effect> {
    let mut out = Vec::new();
    for k in keys.split(' ').filter(|k| !k.is_empty()) {
        let ev = match k {
            "<enter>" => code(KeyCode::Enter),
            "<esc>" => code(KeyCode::Esc),
            "<tab>" => code(KeyCode::Tab),
            "<bs>" => code(KeyCode::Backspace),
            "<space>" => key(' '),
            c if c.chars().count() == 1 => key(c.chars().next().unwrap()),
            other => panic!("unknown key `{other}` in script"),
        };
        let e = a.key(ev);
        if e != Effect::None {
            out.push(e);
        }
    }
    out
}

fn typed(a: &mut App, text: &str) {
    for c in text.chars() {
        a.key(key(c));
    }
}

/// Runs of `/api/slo/{name}/runs` as the server sends them (slowest first).
fn burned_runs() -> Vec<RunRow> {
    custos_tui::data::runs(&serde_json::json!([
        {"run_id": "run-q7", "workflow": "invoice-processing", "outcome": "success",
         "duration_ms": 912000.0, "cost_usd": 0.0031, "start_time": "2026-11-21 18:02:11"},
        {"run_id": "run-m3", "workflow": "support-triage", "outcome": "escalated",
         "duration_ms": 905500.0, "cost_usd": null, "start_time": "2026-11-21 19:40:00"},
        {"run_id": "run-k1", "workflow": "invoice-processing", "outcome": "failure",
         "duration_ms": 901000.0, "cost_usd": 0.0092, "start_time": "2026-11-21 17:10:42"}
    ]))
}

/// Spans of one run as `/api/sql` answers the waterfall query (in start order, attributes as
/// objects), children out of order on purpose.
fn spans() -> serde_json::Value {
    let t = 1_795_290_000_000_000_000i64;
    serde_json::json!([
        {"span_id": "a1", "parent_span_id": null, "name": "run invoice-processing",
         "start_time_unix_nano": t, "end_time_unix_nano": t + 912_000_000_000i64,
         "status_code": "ok", "status_message": null,
         "attributes": {"automation.run_id": "run-q7", "automation.outcome": "success"}},
        {"span_id": "b2", "parent_span_id": "a1", "name": "extract",
         "start_time_unix_nano": t + 1_000_000, "end_time_unix_nano": t + 2_400_000_000i64,
         "status_code": "ok", "status_message": null,
         "attributes": {"automation.step": "extract", "gen_ai.request.model": "small",
                        "automation.decision.confidence": "0.71"}},
        {"span_id": "d4", "parent_span_id": "a1", "name": "post",
         "start_time_unix_nano": t + 910_000_000_000i64, "end_time_unix_nano": t + 911_900_000_000i64,
         "status_code": "error", "status_message": "ledger timeout",
         "attributes": {"automation.step": "post", "automation.connector": "ledger"}},
        {"span_id": "c3", "parent_span_id": "a1", "name": "review",
         "start_time_unix_nano": t + 2_500_000_000i64, "end_time_unix_nano": t + 909_000_000_000i64,
         "status_code": "unset", "status_message": null,
         "attributes": {"automation.step": "review", "automation.human.reviewer": "ana"}},
        {"span_id": "e5", "parent_span_id": "d4", "name": "POST /ledger",
         "start_time_unix_nano": t + 910_100_000_000i64, "end_time_unix_nano": t + 911_800_000_000i64,
         "status_code": "error", "status_message": "timeout",
         "attributes": {}}
    ])
}

#[test]
fn script_slo_in_breach_to_the_runs_that_burned_it_to_a_span_waterfall() {
    let mut a = app();
    // Overview, SLO pane: the third SLO (`override-rate`) is in breach.
    assert_eq!(
        script(&mut a, "j j <enter>"),
        [Effect::Load(Request::SloRuns("override-rate".into()))]
    );
    let f = frame(&a, 80, 24, true);
    assert!(
        f.contains("[1 Overview] › SLO override-rate: runs") && f.contains("loading"),
        "{f}"
    );
    // A failed load says why and how to go on; `r` reloads it.
    a.loaded(
        &Request::SloRuns("override-rate".into()),
        Err("`http://x/api/slo/override-rate/runs` answered 500".into()),
    );
    assert!(frame(&a, 80, 24, true).contains("r retry · esc back"));
    a.loaded(
        &Request::SloRuns("override-rate".into()),
        Ok(Detail::Runs(burned_runs())),
    );
    insta::assert_snapshot!("drill_slo_runs_80x24", frame(&a, 80, 24, true));
    assert_eq!(a.rows(), 3);
    // `s` sorts by the next key (newest first), and back.
    script(&mut a, "s");
    assert_eq!(a.sort_key(), "newest");
    assert_eq!(a.run_list()[0].run_id, "run-m3");
    script(&mut a, "s s");
    assert_eq!(a.sort_key(), "slowest");
    assert_eq!(a.run_list()[0].run_id, "run-q7");
    // Into the slowest run's trace.
    assert_eq!(
        script(&mut a, "<enter>"),
        [Effect::Load(Request::Trace("run-q7".into()))]
    );
    let spans = custos_tui::data::waterfall(&spans());
    let order: Vec<(&str, usize)> = spans.iter().map(|s| (s.name.as_str(), s.depth)).collect();
    assert_eq!(
        order,
        [
            ("run invoice-processing", 0),
            ("extract", 1),
            ("review", 1),
            ("post", 1),
            ("POST /ledger", 2)
        ]
    );
    a.loaded(&Request::Trace("run-q7".into()), Ok(Detail::Spans(spans)));
    script(&mut a, "j");
    let f = frame(&a, 120, 40, true);
    insta::assert_snapshot!("drill_waterfall_120x40", f);
    assert!(
        f.contains("› run run-q7") && f.contains("Attributes of extract (b2)"),
        "{f}"
    );
    // The same at 80×24, the error span selected: its message shows with its attributes.
    script(&mut a, "G k");
    insta::assert_snapshot!("drill_waterfall_80x24", frame(&a, 80, 24, true));
    // A filter inside a level is the level's own; back out restores the one below.
    script(&mut a, "/ l e d g e r <enter>");
    assert_eq!(a.rows(), 2, "`post` (connector ledger) and `POST /ledger`");
    script(&mut a, "<esc> <esc>");
    assert_eq!(
        a.stack.len(),
        1,
        "esc cleared the filter, then went back one level"
    );
    assert_eq!(a.selection(), 0, "the run list kept its selection");
    script(&mut a, "<esc>");
    assert!(a.stack.is_empty());
    assert_eq!(
        (a.screen, a.pane, a.selection()),
        (Screen::Overview, Pane::Slos, 2)
    );
    // Runs screen: enter opens a waterfall too; a number key leaves every level.
    assert_eq!(
        script(&mut a, "3 j <enter>"),
        [Effect::Load(Request::Trace("run-z9".into()))]
    );
    script(&mut a, "1");
    assert!(a.stack.is_empty());
}

/// `GET /api/reviews/{id}` as the server sends it for a posting a policy sent to review.
fn review_task() -> serde_json::Value {
    serde_json::json!({
        "id": "run-a1-review", "run_id": "run-a1", "workflow": "invoice-processing",
        "step": "review", "queue": "ap-team", "priority": "high",
        "created_ms": NOW - 3_900_000, "due_ms": NOW + 82_500_000, "status": "pending",
        "context": {
            "input": {"invoice_id": "INV-2291", "vendor": "acme", "amount": 18250.0},
            "decision_step": "extract",
            "proposal": {"vendor": "acme", "amount": 18250.0, "account": "6100"},
            "label": "extracted", "confidence": 0.71, "model": "small",
            "prompt_version": "v2",
            "policy": {"step": "post", "decision": {
                "decision": "deny", "policies": [],
                "advice": ["amounts over 10000 need a human: route to the ap-team queue"],
                "audit_seq": 5971}},
            "trace_id": "4f1c0b7e9a2d4c11b0e3a5d6c7f8091a", "started_by": "ben"
        }
    })
}

#[test]
fn script_pending_review_to_its_context_and_an_approve_through_the_dialog() {
    let mut a = app().with_reviewer(Some("ana".into()));
    // Overview: tab to the reviews pane, enter on the oldest (first) review.
    assert_eq!(
        script(&mut a, "<tab> <enter>"),
        [Effect::Load(Request::Review("run-a1-review".into()))]
    );
    let task = custos_tui::data::review_detail(&serde_json::from_value(review_task()).unwrap());
    assert_eq!(task.policy.as_ref().unwrap().audit_seq, Some(5971));
    a.loaded(
        &Request::Review("run-a1-review".into()),
        Ok(Detail::Review(Box::new(task))),
    );
    let f = frame(&a, 80, 24, true);
    insta::assert_snapshot!("drill_review_80x24", f);
    assert!(f.contains("amounts over 10000 need a human"), "{f}");
    // Approve: a reason first (an empty one is not accepted), then the confirmation.
    script(&mut a, "a");
    assert_eq!(a.dialog.as_ref().unwrap().stage, Stage::Reason);
    script(&mut a, "<enter>");
    assert_eq!(a.dialog.as_ref().unwrap().stage, Stage::Reason);
    typed(&mut a, "PO 7781 matches");
    script(&mut a, "<enter>");
    assert_eq!(a.dialog.as_ref().unwrap().stage, Stage::Confirm);
    let f = frame(&a, 120, 40, true);
    insta::assert_snapshot!("drill_review_confirm_120x40", f);
    assert!(
        f.contains("POST /api/reviews/run-a1-review/approve")
            && f.contains("Custos::User::\"ana\" approve_review")
            && f.contains("(override: false)")
            && f.contains("kind `review`"),
        "{f}"
    );
    // `n` goes back to the reason; `y` sends.
    script(&mut a, "n");
    typed(&mut a, " (checked)");
    script(&mut a, "<enter>");
    assert_eq!(
        script(&mut a, "y"),
        [Effect::Decide(Decide {
            id: "run-a1-review".into(),
            approve: true,
            reviewer: "ana".into(),
            reason: "PO 7781 matches (checked)".into(),
        })]
    );
    assert_eq!(a.dialog.as_ref().unwrap().stage, Stage::Sending);
    assert_eq!(script(&mut a, "q"), [], "keys wait while sending");
    // A refusal keeps the dialog, with the server's reason.
    a.decided(Err(
        "`…/approve` answered 403: `ana` may not decide review".into()
    ));
    let f = frame(&a, 80, 24, true);
    assert!(
        f.contains("not recorded") && f.contains("may not decide"),
        "{f}"
    );
    // Try again: this time the server records it.
    assert!(matches!(
        script(&mut a, "<enter> y")[..],
        [Effect::Decide(_)]
    ));
    let answer = custos_tui::data::decided(
        &serde_json::from_value(serde_json::json!({
            "task": {"id": "run-a1-review", "status": "approved", "reviewer": "ana"},
            "decision": {"decision": "allow"}, "audit_seq": 5990
        }))
        .unwrap(),
    );
    assert_eq!(a.decided(Ok(answer)), Effect::Refresh);
    assert!(a.dialog.is_none() && a.stack.is_empty());
    assert_eq!(
        a.message.as_deref(),
        Some("approved `run-a1-review` as `ana`: audit record #5990; the run goes on")
    );
}

#[test]
fn a_review_without_a_reviewer_is_read_only_and_links_its_trace() {
    let mut a = app();
    script(&mut a, "4 <enter>");
    a.loaded(
        &Request::Review("run-a1-review".into()),
        Ok(Detail::Review(Box::new(custos_tui::data::review_detail(
            &serde_json::from_value(review_task()).unwrap(),
        )))),
    );
    script(&mut a, "x");
    assert!(a.dialog.is_none());
    assert!(a.message.as_deref().unwrap().contains("a reviewer's token"));
    // Reject with a reviewer: the dialog says it is an override and escalates.
    let mut b = a.clone().with_reviewer(Some("ben".into()));
    script(&mut b, "x");
    typed(&mut b, "wrong vendor");
    script(&mut b, "<enter>");
    let lines = b.dialog.as_ref().unwrap().record("ben").join("\n");
    assert!(
        lines.contains("/reject")
            && lines.contains("override: true")
            && lines.contains("escalated"),
        "{lines}"
    );
    script(&mut b, "<esc>");
    assert!(b.dialog.is_none() && b.stack.len() == 1);
    // Enter on the context opens the run's trace.
    assert_eq!(
        script(&mut a, "<enter>"),
        [Effect::Load(Request::Trace("run-a1".into()))]
    );
    assert_eq!(a.open_request(), Some(Request::Trace("run-a1".into())));
}

#[test]
fn s_sorts_every_list_and_titles_say_so() {
    let mut a = app();
    script(&mut a, "s");
    assert_eq!(a.sort_key(), "burn");
    assert_eq!(a.slo_list()[0].name, "override-rate");
    script(&mut a, "s");
    assert_eq!(
        a.slo_list()[0].name,
        "override-rate",
        "least budget left first"
    );
    assert!(frame(&a, 120, 40, true).contains("SLOs (4) · by budget"));
    script(&mut a, "<tab> s");
    assert_eq!(a.review_list()[0].id, "run-a1-review", "oldest first");
    script(&mut a, "s");
    assert_eq!(
        a.review_list()[0].id,
        "run-c3-review",
        "lowest confidence first"
    );
    script(&mut a, "3 s");
    assert_eq!(a.run_list()[0].run_id, "run-y8", "slowest first");
    script(&mut a, "s");
    assert_eq!(a.run_list()[0].run_id, "run-y8", "dearest first");
    script(&mut a, "5 s");
    assert_eq!(a.decision_list(false)[0].seq, 5967, "oldest first");
    script(&mut a, "s");
    assert_eq!(a.decision_list(false)[0].kind, "authorize");
}

#[test]
fn script_a_denial_to_its_whole_audit_record() {
    let mut a = app();
    // Overview, denials pane (shift-tab from the SLOs): the newest denial.
    assert_eq!(
        script(&mut a, "<tab> <tab> <enter>"),
        [Effect::Load(Request::Record(5969))]
    );
    // The record as `GET /api/audit/records/5969` returns it.
    let record: custos_api::AuditRecord = serde_json::from_value(serde_json::json!({
        "seq": 5969, "time": "2026-11-21T20:24:15.118Z", "kind": "gate",
        "principal": "Custos::Service::\"ci\"", "action": "Custos::Action::\"deploy\"",
        "resource": "Custos::Workflow::\"invoice-processing\"", "decision": "deny",
        "policies": ["deploy-override-rate-regressed"],
        "advice": ["keep the current version: humans may override the candidate more often"],
        "errors": [],
        "context": {"change": {"candidate": "v2", "current": "v1"},
                    "evaluated": {"metrics": {"override_rate_delta_upper": "0.3246"}}},
        "policy_hash": "bfec3366402d09868d0e", "prev_hash": "ff14f6ba85", "hash": "16bb110c67"
    }))
    .unwrap();
    a.loaded(&Request::Record(5969), Ok(Detail::Record(Box::new(record))));
    let f = frame(&a, 80, 24, true);
    insta::assert_snapshot!("drill_record_80x24", f);
    assert!(
        f.contains("› record #5969") && f.contains("override_rate_delta_upper"),
        "{f}"
    );
    assert!(
        f.contains("\"change\": {"),
        "the context is pretty-printed: {f}"
    );
    // j scrolls the record.
    script(&mut a, "j j j");
    let f = frame(&a, 80, 24, true);
    assert!(!f.contains("║time ") && f.contains("║resource "), "{f}");
    // Esc goes back to the pane (an unknown record is the server's 404, tested there).
    script(&mut a, "<esc>");
    assert_eq!((a.stack.len(), a.pane), (0, Pane::Denials));
    // The Decisions screen drills the same way.
    assert_eq!(
        script(&mut a, "5 j <enter>"),
        [Effect::Load(Request::Record(5968))]
    );
}

#[test]
fn filters_search_what_rows_show_and_only_in_the_focused_list() {
    let mut a = app();
    // Field names are not row text: `name` matches no SLO; the other panes keep all their rows.
    script(&mut a, "/ n a m e <enter>");
    assert_eq!(a.rows(), 0);
    assert_eq!(a.review_list().len(), 3);
    script(&mut a, "<esc>");
    script(&mut a, "/ t i c k e t <enter>");
    assert_eq!(a.slo_list()[0].name, "override-rate");
    // Drilling in starts without a filter; leaving by a number key brings the screen's back.
    script(&mut a, "<enter>");
    assert_eq!(a.filter, "");
    script(&mut a, "/ r u n - q <enter> 1");
    assert_eq!((a.stack.len(), a.filter.as_str()), (0, "ticket"));
}

#[test]
fn a_failed_reload_keeps_the_data_and_says_so_and_overdue_reviews_say_so() {
    let mut a = app();
    script(&mut a, "j j <enter>");
    let r = Request::SloRuns("override-rate".into());
    a.loaded(&r, Ok(Detail::Runs(burned_runs())));
    a.loaded(&r, Err("`…/runs` answered 503".into()));
    let f = frame(&a, 80, 24, true);
    assert!(
        f.contains("run-q7") && f.contains("reload failed, showing the last"),
        "{f}"
    );
    a.loaded(&r, Ok(Detail::Runs(burned_runs())));
    assert!(!frame(&a, 80, 24, true).contains("reload failed"));

    let mut b = app();
    script(&mut b, "4 <enter>");
    let mut task = review_task();
    task["due_ms"] = serde_json::json!(NOW - 600_000);
    b.loaded(
        &Request::Review("run-a1-review".into()),
        Ok(Detail::Review(Box::new(custos_tui::data::review_detail(
            &serde_json::from_value(task).unwrap(),
        )))),
    );
    let f = frame(&b, 80, 24, true);
    assert!(f.contains("overdue by 10m"), "{f}");
}
