//! SDK failures mapped onto the pipeline's [`Error`]: the adapter side of `model::error`, which it re-exports so
//! handlers take both from here.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

pub use crate::model::error::*;

const THROTTLING_CODES: &[&str] = &[
    "RequestLimitExceeded",
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
];

const TRANSIENT_CODES: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "ServiceUnavailable",
    "Unavailable",
];

/// EC2 limits that lift as other work finishes ("Error codes for the Amazon EC2 API", EC2 API reference):
/// ConcurrentSnapshotLimitExceeded (too many snapshots pending), SnapshotCreationPerVolumeRateExceeded (wait at
/// least 15 s between snapshots of a volume), ResourceLimitExceeded (e.g. too many snapshot copies in progress, on
/// CopyImage), InstanceLimitExceeded / VcpuLimitExceeded (running On-Demand instances or vCPUs of the account).
pub const LIMIT_CODES: &[&str] = &[
    "ConcurrentSnapshotLimitExceeded",
    "SnapshotCreationPerVolumeRateExceeded",
    "ResourceLimitExceeded",
    "InstanceLimitExceeded",
    "VcpuLimitExceeded",
];

/// RunInstances answers that move the launch to the recipe's next subnet or instance type instead of failing:
/// InsufficientInstanceCapacity ("not enough capacity to fulfill your request": another Availability Zone or
/// type may have it) and Unsupported (the type is not offered in that Availability Zone) ("Error codes for the
/// Amazon EC2 API", EC2 API reference). Mapped on their own, by the launch (`crate::aws::ec2::launch`).
pub const CAPACITY_CODES: &[&str] = &["InsufficientInstanceCapacity", "Unsupported"];

/// The AWS error code of a failed SDK call, if the service answered with one.
pub fn aws_code<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> Option<&str> {
    match err {
        SdkError::ServiceError(e) => e.err().code(),
        _ => None,
    }
}

/// Maps an SDK failure that the caller did not handle itself onto the pipeline's errors.
pub fn from_sdk<E, R>(operation: &str, err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match &err {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown").to_string();
            let message = format!("{operation}: {}", service.err().message().unwrap_or("no message"));
            if THROTTLING_CODES.contains(&code.as_str()) {
                Error::Throttled(format!("{code} {message}"))
            } else if TRANSIENT_CODES.contains(&code.as_str()) {
                Error::Transient(format!("{code} {message}"))
            } else if LIMIT_CODES.contains(&code.as_str()) {
                Error::LimitExceeded(format!("{code} {message}"))
            } else if code == "IdempotentParameterMismatch" {
                Error::Conflict(message)
            } else {
                Error::Aws { code, message }
            }
        }
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => Error::Transient(
            format!("{operation}: {}", aws_sdk_ec2::error::DisplayErrorContext(&err)),
        ),
        _ => Error::Internal(format!(
            "{operation}: {}",
            aws_sdk_ec2::error::DisplayErrorContext(&err)
        )),
    }
}

/// Extension to map SDK results in one call: `client.x().send().await.aws("X")?`.
pub trait SdkResultExt<T> {
    fn aws(self, operation: &str) -> Result<T>;
}

impl<T, E, R> SdkResultExt<T> for std::result::Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    fn aws(self, operation: &str) -> Result<T> {
        self.map_err(|e| from_sdk(operation, e))
    }
}
