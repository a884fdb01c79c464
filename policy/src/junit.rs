//! JUnit XML, the one writer behind every CI report custos emits in that format: `custos policy
//! test --format junit` (here) and `custos gate --format junit` (in governance).
//!
//! The document is built as data ([`Report`] → [`Suite`] → [`Case`]) and rendered in one place,
//! with every attribute and text escaped. Totals (`tests`, `failures`) are counted from the cases,
//! so they cannot disagree with what is listed. A hand-written module rather than `quick-junit`:
//! that crate would add a second `quick-xml` and three more crates to the tree for about eighty
//! lines of output (see docs/adr/0005-layout.md).

use std::fmt::Write as _;
use std::time::Duration;

/// A whole document: `<testsuites>`.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The `name` attribute.
    pub name: String,
    /// Whether `time` attributes are written (summed from the cases' times).
    pub timed: bool,
    /// The suites, in order.
    pub suites: Vec<Suite>,
}

/// One `<testsuite>`.
#[derive(Debug, Clone, Default)]
pub struct Suite {
    /// The `name` attribute.
    pub name: String,
    /// The cases, in order.
    pub cases: Vec<Case>,
}

/// One `<testcase>`.
#[derive(Debug, Clone, Default)]
pub struct Case {
    /// The `name` attribute.
    pub name: String,
    /// The `classname` attribute.
    pub classname: String,
    /// Further attributes after `classname` (`file`, `line`), in order.
    pub attributes: Vec<(&'static str, String)>,
    /// How long the case took (written when the report is timed).
    pub time: Duration,
    /// Why it failed, if it did.
    pub failure: Option<Failure>,
}

/// A `<failure>`.
#[derive(Debug, Clone, Default)]
pub struct Failure {
    /// The `message` attribute.
    pub message: String,
    /// The element's text; without one the element is written empty (`<failure …/>`).
    pub text: Option<String>,
}

impl Suite {
    fn failures(&self) -> usize {
        self.cases.iter().filter(|c| c.failure.is_some()).count()
    }

    fn time(&self) -> f64 {
        self.cases.iter().map(|c| c.time.as_secs_f64()).sum()
    }
}

/// Renders the document.
pub fn render(report: &Report) -> String {
    let time = |t: f64| {
        if report.timed {
            format!(" time=\"{t:.6}\"")
        } else {
            String::new()
        }
    };
    let tests: usize = report.suites.iter().map(|s| s.cases.len()).sum();
    let failures: usize = report.suites.iter().map(Suite::failures).sum();
    let total: f64 = report.suites.iter().map(Suite::time).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"{}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\"{}>",
        escape(&report.name),
        time(total)
    );
    for suite in &report.suites {
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"0\"{}>",
            escape(&suite.name),
            suite.cases.len(),
            suite.failures(),
            time(suite.time())
        );
        for case in &suite.cases {
            let _ = write!(
                out,
                "    <testcase name=\"{}\" classname=\"{}\"",
                escape(&case.name),
                escape(&case.classname)
            );
            for (key, value) in &case.attributes {
                let _ = write!(out, " {key}=\"{}\"", escape(value));
            }
            out.push_str(&time(case.time.as_secs_f64()));
            match &case.failure {
                None => out.push_str("/>\n"),
                Some(Failure {
                    message,
                    text: None,
                }) => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\"/>\n    </testcase>",
                        escape(message)
                    );
                }
                Some(Failure {
                    message,
                    text: Some(text),
                }) => {
                    let _ = writeln!(
                        out,
                        ">\n      <failure message=\"{}\">{}</failure>\n    </testcase>",
                        escape(message),
                        escape(text)
                    );
                }
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

/// Escapes text for XML attributes and content; control characters XML 1.0 cannot carry are
/// dropped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' && c != '\r' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_is_escaped() {
        assert_eq!(escape("a<b & \"c\"\u{1}"), "a&lt;b &amp; &quot;c&quot;");
    }

    #[test]
    fn totals_are_counted_from_the_cases_and_failures_carry_their_text() {
        let case = |name: &str, failure: Option<Failure>| Case {
            name: name.into(),
            classname: "c".into(),
            time: Duration::from_millis(250),
            failure,
            ..Case::default()
        };
        let report = Report {
            name: "r & s".into(),
            timed: true,
            suites: vec![Suite {
                name: "one".into(),
                cases: vec![
                    case("passes", None),
                    case(
                        "fails",
                        Some(Failure {
                            message: "m".into(),
                            text: Some("a\nb".into()),
                        }),
                    ),
                    case(
                        "fails bare",
                        Some(Failure {
                            message: "<x>".into(),
                            text: None,
                        }),
                    ),
                ],
            }],
        };
        assert_eq!(
            render(&report),
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
             <testsuites name=\"r &amp; s\" tests=\"3\" failures=\"2\" errors=\"0\" time=\"0.750000\">\n\
             \x20 <testsuite name=\"one\" tests=\"3\" failures=\"2\" errors=\"0\" time=\"0.750000\">\n\
             \x20   <testcase name=\"passes\" classname=\"c\" time=\"0.250000\"/>\n\
             \x20   <testcase name=\"fails\" classname=\"c\" time=\"0.250000\">\n\
             \x20     <failure message=\"m\">a\nb</failure>\n\
             \x20   </testcase>\n\
             \x20   <testcase name=\"fails bare\" classname=\"c\" time=\"0.250000\">\n\
             \x20     <failure message=\"&lt;x&gt;\"/>\n\
             \x20   </testcase>\n\
             \x20 </testsuite>\n\
             </testsuites>\n"
        );
    }
}
