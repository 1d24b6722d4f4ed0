//! The SDK side of `model::rerun` (which it re-exports): how old a kept image is.

pub use crate::model::rerun::*;

/// An image's `CreationDate` (RFC 3339, as DescribeImages gives it) in Unix seconds.
pub fn created_at(image: &aws_sdk_ec2::types::Image) -> Option<i64> {
    crate::model::time::unix_seconds(image.creation_date()?)
}
