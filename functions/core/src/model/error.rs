//! The one error type of the pipeline, and its stable names.
//!
//! Step Functions matches `Retry` and `Catch` on a Lambda error's `errorType`, so every variant maps to a fixed
//! `AmiPipeline.*` name that never changes with the Rust code (see `error_type`). The README lists them.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The event, the recipe or a step input is malformed. Nothing was changed; fix the named field.
    #[error("invalid input at `{field}`: {message}")]
    InvalidInput { field: String, message: String },
    /// No recipe is stored for the pipeline named in the event.
    #[error("recipe not found: {0}")]
    RecipeNotFound(String),
    /// The base image does not exist, or the look-up found none.
    #[error("source image not found: {0}")]
    SourceNotFound(String),
    /// The base image's owner is not in the recipe's allow-list, or it is deprecated, not available, or of the
    /// wrong architecture.
    #[error("source image not trusted: {0}")]
    SourceNotTrusted(String),
    /// AWS throttled us (after the SDK's own retries). Retrying later helps.
    #[error("throttled: {0}")]
    Throttled(String),
    /// A 5xx or network failure. Retrying helps.
    #[error("transient AWS failure: {0}")]
    Transient(String),
    /// An EC2 limit that clears as other work finishes (concurrent snapshots, snapshot rate per volume, copies in
    /// progress, running instances or vCPUs): retried with a longer back-off than throttling.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),
    /// No capacity for the builder or test instance in any subnet and instance type the recipe allows; the
    /// message lists every (subnet, type) tried and EC2's answer.
    #[error("no capacity: {0}")]
    NoCapacity(String),
    /// A resource with our name exists but belongs to another execution, or a ClientToken was reused with
    /// other parameters.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The builder's provisioning script failed, or the builder stopped without a result.
    #[error("provisioning failed: {0}")]
    ProvisionFailed(String),
    /// Run Command could not reach the builder's or test instance's SSM agent within its deadline from when it was
    /// needed or last seen (no agent in the image, no instance profile, no route to the SSM endpoints, a stopped node),
    /// or SSM kept refusing the command with `InvalidInstanceId` (also a missing permission to the node). The message
    /// says which was seen.
    #[error("SSM agent not online: {0}")]
    AgentNotOnline(String),
    /// A snapshot ended in state `error`.
    #[error("snapshot failed: {0}")]
    SnapshotFailed(String),
    /// An image (registered or copied) ended in state `failed`, `invalid` or `error`.
    #[error("image failed: {0}")]
    ImageFailed(String),
    /// The new image's billing (PlatformDetails, UsageOperation), boot mode or NitroTPM support differs from what
    /// it was built from or what the recipe asks: the image would be billed or boot wrongly. Cleanup removes it.
    #[error("platform mismatch: {0}")]
    PlatformMismatch(String),
    /// The test instance did not pass its status checks or its smoke test.
    #[error("test failed: {0}")]
    TestFailed(String),
    /// A status call found the step still running. The state machine's Retry on the status Task is the poll
    /// loop: it calls again after a back-off, and the handler's deadline (`Timeout`, not retried) bounds it.
    #[error("not ready: {0}")]
    NotReady(String),
    /// A step did not finish before its deadline from the recipe.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A resource this execution relies on is gone (for example an instance terminated by someone else).
    #[error("resource gone: {0}")]
    ResourceGone(String),
    /// The recipe asks for public sharing without `distribution.public: true`.
    #[error("public sharing not allowed: {0}")]
    PublicSharingNotAllowed(String),
    /// AWS refused the call for a reason a retry will not fix (permissions, limits, bad parameters).
    #[error("AWS error {code}: {message}")]
    Aws { code: String, message: String },
    /// A bug or an unexpected answer. Retrying does not help.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidInput {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The stable name Step Functions sees as `Error`.
    pub fn error_type(&self) -> &'static str {
        match self {
            Error::InvalidInput { .. } => "AmiPipeline.InvalidInput",
            Error::RecipeNotFound(_) => "AmiPipeline.RecipeNotFound",
            Error::SourceNotFound(_) => "AmiPipeline.SourceNotFound",
            Error::SourceNotTrusted(_) => "AmiPipeline.SourceNotTrusted",
            Error::Throttled(_) => "AmiPipeline.Throttled",
            Error::Transient(_) => "AmiPipeline.Transient",
            Error::LimitExceeded(_) => "AmiPipeline.LimitExceeded",
            Error::NoCapacity(_) => "AmiPipeline.NoCapacity",
            Error::Conflict(_) => "AmiPipeline.Conflict",
            Error::ProvisionFailed(_) => "AmiPipeline.ProvisionFailed",
            Error::AgentNotOnline(_) => "AmiPipeline.AgentNotOnline",
            Error::SnapshotFailed(_) => "AmiPipeline.SnapshotFailed",
            Error::ImageFailed(_) => "AmiPipeline.ImageFailed",
            Error::PlatformMismatch(_) => "AmiPipeline.PlatformMismatch",
            Error::TestFailed(_) => "AmiPipeline.TestFailed",
            Error::NotReady(_) => "AmiPipeline.NotReady",
            Error::Timeout(_) => "AmiPipeline.Timeout",
            Error::ResourceGone(_) => "AmiPipeline.ResourceGone",
            Error::PublicSharingNotAllowed(_) => "AmiPipeline.PublicSharingNotAllowed",
            Error::Aws { .. } => "AmiPipeline.AwsError",
            Error::Internal(_) => "AmiPipeline.Internal",
        }
    }

    /// Whether a later retry of the same step can succeed (so a status call answers it `NotReady`).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Throttled(_) | Error::Transient(_) | Error::LimitExceeded(_)
        )
    }

    /// Every name `error_type` can return, for docs and for checking the state machine.
    pub const ALL_TYPES: &'static [&'static str] = &[
        "AmiPipeline.InvalidInput",
        "AmiPipeline.RecipeNotFound",
        "AmiPipeline.SourceNotFound",
        "AmiPipeline.SourceNotTrusted",
        "AmiPipeline.Throttled",
        "AmiPipeline.Transient",
        "AmiPipeline.LimitExceeded",
        "AmiPipeline.NoCapacity",
        "AmiPipeline.Conflict",
        "AmiPipeline.ProvisionFailed",
        "AmiPipeline.AgentNotOnline",
        "AmiPipeline.SnapshotFailed",
        "AmiPipeline.ImageFailed",
        "AmiPipeline.PlatformMismatch",
        "AmiPipeline.TestFailed",
        "AmiPipeline.NotReady",
        "AmiPipeline.Timeout",
        "AmiPipeline.ResourceGone",
        "AmiPipeline.PublicSharingNotAllowed",
        "AmiPipeline.AwsError",
        "AmiPipeline.Internal",
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_stable_and_listed() {
        let samples = [
            Error::invalid("a", "b"),
            Error::Throttled("x".into()),
            Error::Aws {
                code: "c".into(),
                message: "m".into(),
            },
        ];
        for e in samples {
            assert!(Error::ALL_TYPES.contains(&e.error_type()));
            assert!(e.error_type().starts_with("AmiPipeline."));
        }
    }

    #[test]
    fn only_throttling_transient_and_limits_are_retryable() {
        assert!(Error::Throttled(String::new()).is_retryable());
        assert!(Error::Transient(String::new()).is_retryable());
        assert!(Error::LimitExceeded(String::new()).is_retryable());
        assert!(!Error::NoCapacity(String::new()).is_retryable());
        assert!(!Error::SourceNotTrusted(String::new()).is_retryable());
        assert!(!Error::invalid("x", "y").is_retryable());
    }
}
