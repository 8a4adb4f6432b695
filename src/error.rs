//! The crate's error: what went wrong, in a form a program can match on
//! ([`ErrorKind`]) and a person can read ([`Error::render`]).

use std::fmt;

use crate::diag::{self, Diagnostic, Source};

/// Everything that can go wrong on the way from a file to a result.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Mistakes in a source file, with the file to render them against.
    Source {
        source: Box<Source>,
        diagnostics: Vec<Diagnostic>,
    },
    /// A file could not be read or written.
    Io {
        path: String,
        write: bool,
        message: String,
    },
    /// Anything else, said in one sentence.
    Other { kind: ErrorKind, message: String },
}

/// What kind of error: for a program to decide what to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A `.rnn` file with mistakes (diagnostics with spans).
    Source,
    /// A file that cannot be read or written.
    Io,
    /// A weight that is missing, or a tensor of the wrong shape or element type.
    Weights,
    /// An ONNX model, or a part of one, that cellc does not understand.
    Model,
    /// Inputs, outputs or states of the wrong length or shape; a state from
    /// another kernel; a tensor the cell does not read.
    Shape,
    /// Sizes that do not fit in memory or exceed the compiler's limits.
    TooLarge,
    /// Options that cannot hold: zero threads, an unknown plan or target, a
    /// plan a target cannot run.
    Options,
    /// A bug in cellc.
    Internal,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error::Other {
            kind,
            message: message.into(),
        }
    }

    pub fn shape(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Shape, message)
    }

    pub fn too_large(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::TooLarge, message)
    }

    pub fn options(message: impl Into<String>) -> Error {
        Error::new(ErrorKind::Options, message)
    }

    pub fn internal(message: impl Into<String>) -> Error {
        let m: String = message.into();
        Error::new(ErrorKind::Internal, format!("internal error: {m}"))
    }

    pub fn read(path: impl fmt::Display, e: std::io::Error) -> Error {
        Error::Io {
            path: path.to_string(),
            write: false,
            message: e.to_string(),
        }
    }

    pub fn write(path: impl fmt::Display, e: std::io::Error) -> Error {
        Error::Io {
            path: path.to_string(),
            write: true,
            message: e.to_string(),
        }
    }

    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Source { .. } => ErrorKind::Source,
            Error::Io { .. } => ErrorKind::Io,
            Error::Other { kind, .. } => *kind,
        }
    }

    /// The error as the user should see it, without colour.
    /// The message alone, without the `error: ` a rendering starts with
    /// (for an error passed on inside another's message).
    pub fn message(&self) -> String {
        self.render()
            .trim_end()
            .strip_prefix("error: ")
            .map_or_else(|| self.render().trim_end().to_string(), str::to_string)
    }

    pub fn render(&self) -> String {
        match self {
            Error::Source {
                source,
                diagnostics,
            } => {
                let (located, unlocated): (Vec<Diagnostic>, Vec<Diagnostic>) = diagnostics
                    .iter()
                    .cloned()
                    .partition(|d| !d.labels.is_empty());
                let mut s = diag::render_plain(source, &located);
                s.push_str(&diag::render_without_source(&unlocated));
                s
            }
            Error::Io {
                path,
                write,
                message,
            } => format!(
                "error: cannot {} `{path}`: {message}\n",
                if *write { "write" } else { "read" }
            ),
            Error::Other { message, .. } => format!("error: {message}\n"),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.render().trim_end())
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
