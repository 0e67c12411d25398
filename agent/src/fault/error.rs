//! The one error of the fault model's validation: a value the caller sent that cannot be
//! accepted, with the path of the offending field. Every spec file builds it here.

use thiserror::Error;

use super::values::ValueError;

/// A value the caller sent that cannot be accepted, with the path of the offending field.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

impl SpecError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }

    /// For `map_err`: a value's error, placed at `field`.
    pub fn at(field: impl Into<String>) -> impl FnOnce(ValueError) -> Self {
        move |e| Self::new(field, e.0)
    }
}
