//! The engine's errors, and the one place they become wire errors.

use thiserror::Error;

use crate::{
    fault::{
        error::SpecError,
        plan::{TooManyOverlapping, TooManyProtected},
    },
    kernel::KernelError,
    policy::Violation,
    proto::{ErrorBody, ErrorCode},
};

#[derive(Debug, Error)]
pub enum EngineError {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error("no fault {0:?}")]
    NotFound(String),
    #[error("key {key:?} already names fault {fault_id} with a different spec")]
    Conflict { key: String, fault_id: String },
    #[error("{max} faults are active, the most this agent allows")]
    TooManyFaults { max: usize },
    #[error(transparent)]
    Overlap(#[from] TooManyOverlapping),
    #[error("the policy forbids it: {0}")]
    Forbidden(Violation),
    #[error(transparent)]
    Protected(#[from] TooManyProtected),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error("the engine has stopped")]
    Stopped,
}

impl EngineError {
    /// The one place engine errors become wire errors.
    pub fn to_body(&self) -> ErrorBody {
        let body = |code| ErrorBody::new(code, self.to_string());
        match self {
            Self::Spec(e) => ErrorBody::new(ErrorCode::InvalidValue, e.message.clone())
                .with_field(e.field.clone()),
            Self::NotFound(_) => body(ErrorCode::NotFound).with_field("fault_id"),
            Self::Conflict { .. } => body(ErrorCode::Conflict).with_field("key"),
            Self::TooManyFaults { .. } | Self::Overlap(_) => body(ErrorCode::LimitExceeded),
            Self::Forbidden(violation) => {
                body(ErrorCode::Forbidden).with_field(violation.rule.clone())
            }
            Self::Kernel(KernelError::NetnsNotFound { .. }) => {
                body(ErrorCode::NetnsNotFound).with_field("fault.target.netns")
            }
            Self::Kernel(KernelError::DeviceNotFound { .. }) => {
                body(ErrorCode::DeviceNotFound).with_field("fault.target.dev")
            }
            Self::Kernel(KernelError::Unsupported { .. }) => body(ErrorCode::Unsupported),
            Self::Kernel(_) => body(ErrorCode::KernelError),
            Self::Stopped | Self::Protected(_) => body(ErrorCode::Internal),
        }
    }
}
