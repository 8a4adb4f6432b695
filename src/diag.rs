//! Diagnostics: what went wrong, where, and what was expected.
//!
//! Every stage that reads user input reports through [`Diagnostic`]s that carry
//! byte spans into the source file; none of them prints. Rendering happens once,
//! at the edge (the CLI, or a test), with `codespan-reporting`: file, line, column,
//! the source line with a caret under the culprit, and notes (hints). A plain,
//! colourless rendering exists for snapshot tests.

use std::fmt;
use std::ops::Range;

use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFile;
use codespan_reporting::term;
use codespan_reporting::term::termcolor::{ColorChoice, NoColor, StandardStream};

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span {
            start: start.min(u32::MAX as usize) as u32,
            end: end.min(u32::MAX as usize) as u32,
        }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span {
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    pub fn range(self) -> Range<usize> {
        self.start as usize..self.end as usize
    }

    /// `line:column` (both 1-based) of the span's start in `source`.
    pub fn line_col(self, source: &str) -> (usize, usize) {
        let start = (self.start as usize).min(source.len());
        let before = &source.as_bytes()[..start];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let col = String::from_utf8_lossy(&before[line_start..])
            .chars()
            .count()
            + 1;
        (line, col)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// A remark: what the compiler did, and why (`--emit remarks`).
    Note,
    Warning,
    Error,
}

/// A label under a piece of source: the primary one marks the culprit.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub message: String,
    pub primary: bool,
}

/// One message for the user.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// A short stable code, e.g. `E0003`, listed in docs/language.md.
    pub code: &'static str,
    pub message: String,
    pub labels: Vec<Label>,
    /// Hints and explanations, one per line.
    pub notes: Vec<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, message)
        }
    }

    /// The culprit, with what is wrong with it.
    pub fn primary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: true,
        });
        self
    }

    /// A related place (a previous definition, a declaration).
    pub fn secondary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: false,
        });
        self
    }

    /// A hint: what was expected, or how to fix it.
    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn note_at(code: &'static str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: Severity::Note,
            ..Diagnostic::error(code, message)
        }
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The message and its notes on one line, for errors reported without a
    /// source (`size `Q` is not ...: did you mean `H`?`).
    pub fn one_line(&self) -> String {
        let mut s = self.message.clone();
        for n in &self.notes {
            s.push_str("; ");
            s.push_str(n);
        }
        s
    }

    fn to_codespan(&self, source_len: usize) -> cs::Diagnostic<()> {
        let severity = match self.severity {
            Severity::Error => cs::Severity::Error,
            Severity::Warning => cs::Severity::Warning,
            Severity::Note => cs::Severity::Note,
        };
        let clamp = |s: Span| {
            let start = (s.start as usize).min(source_len);
            let end = (s.end as usize).clamp(start, source_len);
            start..end
        };
        cs::Diagnostic::new(severity)
            .with_code(self.code)
            .with_message(&self.message)
            .with_labels(
                self.labels
                    .iter()
                    .map(|l| {
                        let style = if l.primary {
                            cs::LabelStyle::Primary
                        } else {
                            cs::LabelStyle::Secondary
                        };
                        cs::Label::new(style, (), clamp(l.span)).with_message(&l.message)
                    })
                    .collect(),
            )
            .with_notes(self.notes.clone())
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        write!(f, "{kind}[{}]: {}", self.code, self.message)
    }
}

/// A source file as the user named it, with its text.
#[derive(Clone, Debug)]
pub struct Source {
    pub name: String,
    pub text: String,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Source {
        Source {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// Renders diagnostics without colour, as the snapshot tests see them.
pub fn render_plain(source: &Source, diags: &[Diagnostic]) -> String {
    let file = SimpleFile::new(source.name.as_str(), source.text.as_str());
    let config = term::Config::default();
    let mut out = NoColor::new(Vec::new());
    for d in diags {
        // Rendering into memory cannot fail for spans clamped to the file.
        let _ = term::emit(&mut out, &config, &file, &d.to_codespan(source.text.len()));
    }
    String::from_utf8_lossy(&out.into_inner()).into_owned()
}

/// Renders diagnostics to standard error, in colour when it is a terminal.
pub fn emit_stderr(source: &Source, diags: &[Diagnostic]) {
    let file = SimpleFile::new(source.name.as_str(), source.text.as_str());
    let config = term::Config::default();
    let choice = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        ColorChoice::Auto
    } else {
        ColorChoice::Never
    };
    let stream = StandardStream::stderr(choice);
    let mut lock = stream.lock();
    for d in diags {
        let _ = term::emit(&mut lock, &config, &file, &d.to_codespan(source.text.len()));
    }
}

/// Diagnostics with no source to point into (e.g. a bad command-line flag).
pub fn render_without_source(diags: &[Diagnostic]) -> String {
    let mut s = String::new();
    for d in diags {
        s.push_str(&d.to_string());
        s.push('\n');
        for n in &d.notes {
            s.push_str("  = ");
            s.push_str(n);
            s.push('\n');
        }
    }
    s
}

/// True when any diagnostic is an error (warnings alone do not stop compilation).
pub fn has_errors(diags: &[Diagnostic]) -> bool {
    diags.iter().any(Diagnostic::is_error)
}

/// A name as it may appear in a message: at most 80 characters.
pub(crate) fn short(name: &str) -> String {
    if name.chars().count() <= 80 {
        name.to_string()
    } else {
        let head: String = name.chars().take(77).collect();
        format!("{head}...")
    }
}

/// The closest candidate by edit distance, if it is close enough to be a typo.
pub(crate) fn suggest<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    // Short names are too alike to guess at, unless only the case differs.
    let limit = name.chars().count() / 3;
    candidates
        .filter(|c| *c != name)
        .map(|c| {
            let d = if c.eq_ignore_ascii_case(name) {
                0
            } else {
                edit_distance(name, c)
            };
            (d, c)
        })
        .filter(|(d, _)| *d <= limit)
        .min()
        .map(|(_, c)| c)
}

/// Edits (insert, delete, substitute, swap two neighbours) from `a` to
/// `b`: the optimal-string-alignment distance, so `tahn` is one edit from
/// `tanh`, as a typist's slip is.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > 3 {
        return usize::MAX;
    }
    // Rows i-1 and i of the table, and row i-2 for swaps.
    let mut before: Vec<usize> = Vec::new();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            let mut best = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
            if i > 0 && j > 0 && *ca == b[j - 1] && a[i - 1] == *cb {
                best = best.min(before[j - 1] + 1);
            }
            cur[j + 1] = best;
        }
        before = std::mem::replace(&mut prev, cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::{edit_distance, suggest};

    #[test]
    fn swapped_neighbours_are_one_edit() {
        assert_eq!(edit_distance("tahn", "tanh"), 1);
        assert_eq!(edit_distance("sigmiod", "sigmoid"), 1);
        assert_eq!(edit_distance("abc", "abc"), 0);
        assert_eq!(edit_distance("abc", "cab"), 2);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "ab"), 2);
        let f = ["sigmoid", "tanh", "relu"];
        assert_eq!(suggest("tahn", f.into_iter()), Some("tanh"));
        assert_eq!(suggest("TANH", f.into_iter()), Some("tanh"));
        assert_eq!(suggest("cos", f.into_iter()), None);
    }
}
