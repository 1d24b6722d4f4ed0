//! The contract file, `infra/contract.json`: the names the Rust code defines and the rest of the project (the
//! Python tests, the template checks, the benchmarks) reads instead of restating them or parsing Rust source.
//! Generated here, committed, and checked current by `committed_contract_is_current` (`make definition`).

use serde_json::{Value, json};

use crate::aws::error::Error;
use crate::model::event::nightly;
use crate::model::recipe::limits;
use crate::model::steps::{Steps, polling};
use crate::{aws::tags, definition};

/// The function the definition does not call: it starts executions.
pub const TRIGGER_BINARY: &str = "ami-trigger";

/// The IAM actions each function's requests need: its SDK calls, `ec2:CreateTags` where a create call tags in
/// `TagSpecifications` (authorized as CreateTags with `ec2:CreateAction`), `iam:PassRole` where it launches with
/// an instance profile. The template's roles must allow exactly these (`tests/infra`), and the e2e run proves
/// every request each function made is covered and every action listed was needed (`tests/e2e/test_actions.py`,
/// from the emulators' request logs, attributed by the SDK user agent's app id).
pub const ACTIONS: &[(&str, &[&str])] = &[
    (
        "ami-build",
        &[
            "ec2:CreateTags",
            "ec2:DescribeImages",
            "ec2:DescribeInstanceTypes",
            "ec2:DescribeInstances",
            "ec2:GetConsoleOutput",
            "ec2:RunInstances",
            "ec2:StopInstances",
            "ec2:TerminateInstances",
            "iam:PassRole",
            "logs:GetLogEvents",
            "ssm:DescribeInstanceInformation",
            "ssm:GetCommandInvocation",
            "ssm:GetParameter",
            "ssm:ListCommands",
            "ssm:SendCommand",
        ],
    ),
    (
        "ami-cleanup",
        &[
            "ec2:CreateTags",
            "ec2:DeleteSnapshot",
            "ec2:DeregisterImage",
            "ec2:DescribeImages",
            "ec2:DescribeInstances",
            "ec2:DescribeSnapshots",
            "ec2:TerminateInstances",
        ],
    ),
    ("ami-copy", &["ec2:CopyImage", "ec2:CreateTags", "ec2:DescribeImages"]),
    (
        "ami-publish",
        &[
            "ec2:CreateLaunchTemplateVersion",
            "ec2:CreateTags",
            "ec2:DescribeImages",
            "ec2:DescribeLaunchTemplateVersions",
            "ec2:ModifyLaunchTemplate",
            "ssm:GetParameter",
            "ssm:PutParameter",
        ],
    ),
    (
        "ami-register",
        &[
            "ec2:CreateTags",
            "ec2:DescribeImages",
            // whether the instance's UEFI variable store is worth carrying (its boot mode, bare metal or not)
            "ec2:DescribeInstanceTypes",
            "ec2:DescribeInstances",
            "ec2:GetInstanceUefiData",
            "ec2:ModifyImageAttribute",
            "ec2:RegisterImage",
        ],
    ),
    (
        "ami-retire",
        &[
            "ec2:DeleteSnapshot",
            "ec2:DeregisterImage",
            "ec2:DescribeImages",
            "ec2:DescribeLaunchTemplateVersions",
            "ec2:DescribeSnapshots",
            "ec2:EnableImageDeprecation",
            "ssm:GetParameter",
        ],
    ),
    (
        "ami-share",
        &[
            "ec2:DescribeImageAttribute",
            "ec2:DescribeImages",
            "ec2:DescribeSnapshotAttribute",
            "ec2:ModifyImageAttribute",
            "ec2:ModifySnapshotAttribute",
        ],
    ),
    (
        "ami-snapshot",
        &[
            "ec2:CreateImage",
            "ec2:CreateSnapshots",
            "ec2:CreateTags",
            "ec2:DescribeImages",
            "ec2:DescribeInstances",
            "ec2:DescribeSnapshots",
            "ec2:DescribeVolumes",
            "ec2:StopInstances",
        ],
    ),
    (
        "ami-test-launch",
        &[
            "ec2:CreateTags",
            "ec2:DescribeInstanceStatus",
            "ec2:DescribeInstanceTypes",
            "ec2:DescribeInstances",
            "ec2:GetConsoleOutput",
            "ec2:RunInstances",
            "ec2:TerminateInstances",
            "iam:PassRole",
            "logs:GetLogEvents",
            "ssm:DescribeInstanceInformation",
            "ssm:GetCommandInvocation",
            "ssm:ListCommands",
            "ssm:SendCommand",
        ],
    ),
    (
        "ami-trigger",
        &[
            // the preflight (functions/trigger/src/preflight.rs): network, types, the builder's launch by DryRun, and
            // publish's launch templates and parameters (GetParameter) in their regions
            "ec2:CreateTags",
            "ec2:DescribeImages",
            "ec2:DescribeInstanceTypes",
            "ec2:DescribeLaunchTemplates",
            "ec2:DescribeSecurityGroups",
            "ec2:DescribeSubnets",
            "ec2:RunInstances",
            "iam:PassRole",
            "kms:DescribeKey",
            "ssm:GetParameter",
            // the nightly refresh lists the stored recipes (functions/trigger/src/nightly.rs)
            "ssm:GetParametersByPath",
            "states:DescribeExecution",
            "states:StartExecution",
        ],
    ),
];

/// Actions in `ACTIONS` that the e2e run does not exercise, each with the reason it is granted anyway. The e2e
/// check accepts exactly these as unseen.
/// (retire's ec2:DeleteSnapshot is exercised by its orphaned-snapshot sweep: tests/e2e/test_orphan_snapshots.py.)
pub const UNEXERCISED: &[(&str, &str, &str)] = &[];

fn actions_of(binary: &str) -> &'static [&'static str] {
    ACTIONS
        .iter()
        .find(|(b, _)| *b == binary)
        .map(|(_, a)| *a)
        .unwrap_or(&[])
}

/// The request audit's security rules, written once: the unit tests check every EC2 request a handler test sends
/// ([`crate::audit`], feature `testing`), and the e2e run checks every EC2 request the emulator logged
/// (`tests/e2e/test_audit.py`, from this file's `audit`). Both read a request as its EC2 query parameters, as the
/// SDK serializes them and the emulator logs them (`MetadataOptions.HttpTokens`, `TagSpecification.1.Tag.2.Key`).
pub mod audit_rules {
    use serde::Serialize;

    use crate::model::tags;

    /// An exception to a rule, which a recipe option turns on. A unit test holds one (`crate::audit::allow_*`);
    /// the e2e audit finds `instance_store` from the run (the image a request names was registered from a
    /// manifest, or copied from such an image) and never grants the others (no e2e recipe asks for them).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
    #[serde(rename_all = "snake_case")]
    pub enum Exception {
        /// `distribution.public`: the image may be shared with everyone.
        Public,
        /// `image.imds_v2: false`: the image may be registered without ImdsSupport v2.0.
        ImdsOptional,
        /// `image.root_device_type: instance-store`: the image has no EBS root and no snapshot to encrypt.
        InstanceStore,
    }

    /// What a rule checks. `member` names the members of a list, `N` standing for the index
    /// (`BlockDeviceMapping.N.Ebs`: the EBS part of each block device mapping).
    #[derive(Clone, Copy, Debug, Serialize)]
    #[serde(rename_all = "snake_case", tag = "check")]
    pub enum Check {
        /// `param` is `value`.
        Is { param: &'static str, value: &'static str },
        /// `param` starts with `prefix`.
        StartsWith { param: &'static str, prefix: &'static str },
        /// `param` is not sent.
        Unset { param: &'static str },
        /// The list has at least one member.
        AnyMember { member: &'static str },
        /// Every member's `param` is `value`.
        EveryMember {
            member: &'static str,
            param: &'static str,
            value: &'static str,
        },
        /// No member's `param` is `value`.
        NoMember {
            member: &'static str,
            param: &'static str,
            value: &'static str,
        },
        /// A `TagSpecification` for `resource` carries each of `keys` with a value (one violation per key missing).
        Tagged {
            resource: &'static str,
            keys: &'static [&'static str],
        },
    }

    /// One rule: requests of `action` must pass `check` (unless the exception `unless` holds; only when the
    /// exception `when` holds); `violation` says what a failing request did.
    #[derive(Clone, Copy, Debug, Serialize)]
    pub struct Rule {
        pub action: &'static str,
        #[serde(flatten)]
        pub check: Check,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub unless: Option<Exception>,
        #[serde(skip_serializing_if = "Option::is_none")]
        pub when: Option<Exception>,
        pub violation: &'static str,
    }

    /// Every ClientToken the handlers send comes from `naming::client_token`, which starts so. The SDK fills a
    /// random token when a call sets none, which would make a retried call a new request.
    pub const CLIENT_TOKEN_PREFIX: &str = "amip-";
    const OURS: &[&str] = &[tags::PIPELINE, tags::EXECUTION, tags::ROLE];

    const fn rule(action: &'static str, check: Check, violation: &'static str) -> Rule {
        Rule {
            action,
            check,
            unless: None,
            when: None,
            violation,
        }
    }
    const fn unless(exception: Exception, r: Rule) -> Rule {
        Rule {
            unless: Some(exception),
            ..r
        }
    }
    const fn when(exception: Exception, r: Rule) -> Rule {
        Rule {
            when: Some(exception),
            ..r
        }
    }
    const fn token(action: &'static str) -> Rule {
        let check = Check::StartsWith {
            param: "ClientToken",
            prefix: CLIENT_TOKEN_PREFIX,
        };
        rule(
            action,
            check,
            "ClientToken not made by naming::client_token (none, or the SDK's random one)",
        )
    }
    const fn tagged(action: &'static str, resource: &'static str) -> Rule {
        let check = Check::Tagged { resource, keys: OURS };
        rule(action, check, "our tag missing on create")
    }

    use Check::*;
    use Exception::*;

    pub const RULES: &[Rule] = &[
        rule(
            "RunInstances",
            Is {
                param: "MetadataOptions.HttpTokens",
                value: "required",
            },
            "MetadataOptions.HttpTokens is not required (IMDSv2)",
        ),
        rule(
            "RunInstances",
            AnyMember {
                member: "NetworkInterface.N",
            },
            "no NetworkInterface, so AssociatePublicIpAddress is not false",
        ),
        rule(
            "RunInstances",
            EveryMember {
                member: "NetworkInterface.N",
                param: "AssociatePublicIpAddress",
                value: "false",
            },
            "AssociatePublicIpAddress is not false on every interface",
        ),
        unless(
            InstanceStore,
            rule(
                "RunInstances",
                AnyMember {
                    member: "BlockDeviceMapping.N.Ebs",
                },
                "no EBS volume mapped, so none is known to be encrypted",
            ),
        ),
        rule(
            "RunInstances",
            EveryMember {
                member: "BlockDeviceMapping.N.Ebs",
                param: "Encrypted",
                value: "true",
            },
            "not every EBS volume is encrypted",
        ),
        token("RunInstances"),
        tagged("RunInstances", "instance"),
        tagged("RunInstances", "volume"),
        unless(
            ImdsOptional,
            rule(
                "RegisterImage",
                Is {
                    param: "ImdsSupport",
                    value: "v2.0",
                },
                "ImdsSupport is not v2.0",
            ),
        ),
        tagged("RegisterImage", "image"),
        unless(
            InstanceStore,
            rule(
                "CopyImage",
                Is {
                    param: "Encrypted",
                    value: "true",
                },
                "not Encrypted",
            ),
        ),
        when(
            InstanceStore,
            rule(
                "CopyImage",
                Unset { param: "Encrypted" },
                "an instance-store image's copy asked to be encrypted (it has no snapshot)",
            ),
        ),
        when(
            InstanceStore,
            rule(
                "CopyImage",
                Unset { param: "KmsKeyId" },
                "an instance-store image's copy given a KMS key (it has no snapshot)",
            ),
        ),
        token("CopyImage"),
        tagged("CopyImage", "image"),
        tagged("CopyImage", "snapshot"),
        tagged("CreateSnapshots", "snapshot"),
        token("CreateLaunchTemplateVersion"),
        unless(
            Public,
            rule(
                "ModifyImageAttribute",
                NoMember {
                    member: "LaunchPermission.Add.N",
                    param: "Group",
                    value: "all",
                },
                "made public (LaunchPermission Group=all) without the recipe's distribution.public",
            ),
        ),
        rule(
            "ModifySnapshotAttribute",
            NoMember {
                member: "CreateVolumePermission.Add.N",
                param: "Group",
                value: "all",
            },
            "snapshot made public (CreateVolumePermission Group=all)",
        ),
    ];
}

pub fn contract() -> Value {
    let functions: serde_json::Map<String, Value> = definition::function_table()
        .into_iter()
        .map(|(binary, substitution, key)| {
            (
                binary.to_string(),
                json!({"substitution": substitution, "step_key": key, "actions": actions_of(binary)}),
            )
        })
        .chain([(
            TRIGGER_BINARY.to_string(),
            json!({"substitution": null, "step_key": null, "actions": actions_of(TRIGGER_BINARY)}),
        )])
        .collect();
    let retryable: Vec<&str> = [
        Error::Throttled(String::new()),
        Error::Transient(String::new()),
        Error::LimitExceeded(String::new()),
    ]
    .iter()
    .map(Error::error_type)
    .collect();
    let roles = [
        tags::Role::Builder,
        tags::Role::TestInstance,
        tags::Role::Snapshot,
        tags::Role::Image,
    ]
    .map(tags::Role::as_str);
    json!({
        "comment": "Generated by functions/core/src/contract.rs (`make definition`); do not edit.",
        "errors": {
            "all": Error::ALL_TYPES,
            "retryable": retryable,
            "not_ready": Error::NotReady(String::new()).error_type(),
            "timeout": Error::Timeout(String::new()).error_type(),
        },
        "lambda_errors": definition::LAMBDA_ERRORS,
        "lambda_timeouts": definition::LAMBDA_TIMEOUTS,
        "warning_notice": definition::WARNING_NOTICE,
        "step_keys": Steps::KEYS,
        "unexercised_actions": UNEXERCISED
            .iter()
            .map(|(binary, action, why)| json!({"function": binary, "action": action, "why": why}))
            .collect::<Vec<_>>(),
        "functions": functions,
        "tags": {
            "pipeline": tags::PIPELINE,
            "execution": tags::EXECUTION,
            "role": tags::ROLE,
            "release": tags::RELEASE,
            "commit": tags::COMMIT,
            "release_time": tags::RELEASE_TIME,
            "source_image": tags::SOURCE_IMAGE,
            "state": tags::STATE,
            "boot_to_ready": tags::BOOT_TO_READY,
            "recipe_hash": tags::RECIPE_HASH,
            "stopped_seen": tags::STOPPED_SEEN,
            "publish_opt_in": tags::PUBLISH_OPT_IN,
        },
        "tag_values": {
            "roles": roles,
            "states": [tags::STATE_CANDIDATE, tags::STATE_TESTED, tags::STATE_RELEASED],
        },
        "polling": {
            "interval_seconds": polling::INTERVAL_SECONDS,
            "backoff_rate": polling::BACKOFF_RATE,
            "max_delay_seconds": polling::MAX_DELAY_SECONDS,
            "first_poll_seconds": polling::FIRST_POLL_SECONDS,
        },
        "audit": {
            "comment": "The request audit's rules (functions/core/src/contract.rs, audit_rules): tests/e2e/test_audit.py \
                        and functions/core/src/audit.rs evaluate them over a request's EC2 query parameters.",
            "rules": audit_rules::RULES,
        },
        "nightly": {
            "start_interval_seconds": nightly::START_INTERVAL_SECONDS,
            "max_pipelines": nightly::MAX_PIPELINES,
            "seconds_per_pipeline": nightly::SECONDS_PER_PIPELINE,
        },
        "limits_minutes": {
            "build": limits::BUILD_MINUTES,
            "image": limits::IMAGE_MINUTES,
            "test": limits::TEST_MINUTES,
            "copy": limits::COPY_MINUTES,
        },
    })
}

/// The committed text: pretty JSON with sorted keys and a final newline.
pub fn render() -> String {
    definition::render_json(contract())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_contract_is_current() {
        definition::assert_committed("infra/contract.json", &render(), "UPDATE_DEFINITION", "definition");
    }

    #[test]
    fn step_keys_are_what_steps_accepts() {
        for key in Steps::KEYS {
            let one = json!({ *key: null });
            assert!(
                serde_json::from_value::<Steps>(one).is_ok(),
                "Steps does not accept `{key}`"
            );
        }
        assert!(serde_json::from_value::<Steps>(json!({"bogus": null})).is_err());
        // And the definition writes no other key (cleanup's output is the last thing written).
        for (_, _, key) in definition::function_table() {
            assert!(Steps::KEYS.contains(&key) || key == "cleanup", "{key}");
        }
    }

    #[test]
    fn client_tokens_start_as_the_audit_expects() {
        let token = crate::model::naming::client_token("web-r-1", "copy", "eu-west-1");
        assert!(token.starts_with(audit_rules::CLIENT_TOKEN_PREFIX), "{token}");
    }

    #[test]
    fn binaries_are_the_crates_bins() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
        let mut found = Vec::new();
        for entry in std::fs::read_dir(root).expect("functions/") {
            let manifest = entry.expect("entry").path().join("Cargo.toml");
            let text = std::fs::read_to_string(&manifest).unwrap_or_default();
            if let Some(bin) = text.split("[[bin]]").nth(1) {
                let name = bin.split('"').nth(1).expect("[[bin]] name");
                found.push(name.to_string());
            }
        }
        found.sort();
        let mut with_actions: Vec<String> = ACTIONS.iter().map(|(b, _)| b.to_string()).collect();
        with_actions.sort();
        assert_eq!(found, with_actions, "ACTIONS lists every binary once");
        let c = contract();
        let mut declared: Vec<String> = c["functions"].as_object().expect("functions").keys().cloned().collect();
        declared.sort();
        assert_eq!(found, declared);
    }
}
