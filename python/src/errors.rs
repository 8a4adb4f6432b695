//! The exceptions: a `cellc.Error` base and one subclass per `ErrorKind`,
//! each carrying the rendered diagnostic.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    _cellc,
    Error,
    PyException,
    "Every error cellc raises: a subclass per kind, with the rendered message (file, line, column and a caret under the culprit for a `.rnn` source)."
);
create_exception!(_cellc, SourceError, Error, "A `.rnn` source with mistakes.");
create_exception!(
    _cellc,
    FileError,
    Error,
    "A file that cannot be read or written."
);
create_exception!(
    _cellc,
    WeightsError,
    Error,
    "A weight that is missing, of the wrong shape or type, or a checkpoint of another module."
);
create_exception!(
    _cellc,
    ModelError,
    Error,
    "An ONNX model cellc does not understand."
);
create_exception!(
    _cellc,
    ShapeError,
    Error,
    "An input, output or state of the wrong shape, type or kind; a state of another kernel."
);
create_exception!(
    _cellc,
    TooLargeError,
    Error,
    "Sizes that do not fit in memory or exceed cellc's limits."
);
create_exception!(_cellc, OptionsError, Error, "Options that cannot hold.");
create_exception!(
    _cellc,
    InternalError,
    Error,
    "A bug in cellc: please report it."
);

/// A cellc error as the Python exception of its kind.
pub(crate) fn err(e: cellc::Error) -> PyErr {
    use cellc::ErrorKind as K;
    let m = e.render().trim_end().to_string();
    match e.kind() {
        K::Source => SourceError::new_err(m),
        K::Io => FileError::new_err(m),
        K::Weights => WeightsError::new_err(m),
        K::Model => ModelError::new_err(m),
        K::Shape => ShapeError::new_err(m),
        K::TooLarge => TooLargeError::new_err(m),
        K::Options => OptionsError::new_err(m),
        K::Internal => InternalError::new_err(m),
        _ => Error::new_err(m),
    }
}

pub(crate) fn shape_err(m: impl Into<String>) -> PyErr {
    ShapeError::new_err(m.into())
}
