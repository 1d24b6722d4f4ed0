//! The contract tests every step must pass, generated per crate by [`step_contract_tests!`](crate::step_contract_tests)
//! so their names stay the same in every crate (`cargo test malformed_input_names_the_field_and_calls_nothing`).

use serde_json::Value;

use ami_core::aws::error::Error;

use crate::{Calls, World};

/// The entry point the contract tests call unless told otherwise: the state machine's, for a step.
pub use ami_core::step::handle;

/// What counts the calls a handler made: a [`Calls`] counter, or a [`World`] (its reads and writes).
pub trait CallCount {
    fn calls(&self) -> usize;
}

impl CallCount for Calls {
    fn calls(&self) -> usize {
        self.count()
    }
}

impl CallCount for World {
    fn calls(&self) -> usize {
        self.state().calls()
    }
}

/// `request` edited by `change`.
pub fn changed(mut request: Value, change: fn(&mut Value)) -> Value {
    change(&mut request);
    request
}

/// Asserts `result` is an `InvalidInput` naming `want` and that nothing was called.
pub fn assert_refused<T: std::fmt::Debug>(
    result: ami_core::Result<T>,
    want: &str,
    calls: &impl CallCount,
    case: &Value,
) {
    match result {
        Err(Error::InvalidInput { field, .. }) => assert_eq!(field, want, "{case}"),
        other => panic!("{case}: want InvalidInput at {want}, got {other:?}"),
    }
    assert_eq!(calls.calls(), 0, "{case}: refused before any call");
}

/// Asserts `result` rejects the action by name ("copy takes `start` or `status`") and that nothing was called.
pub fn assert_rejected<S: ami_core::step::Step, T: std::fmt::Debug>(
    _step: &S,
    result: ami_core::Result<T>,
    calls: &impl CallCount,
    case: &Value,
) {
    let want = ami_core::step::takes::<S>();
    match result {
        Err(Error::InvalidInput { field, message }) => {
            assert_eq!(
                (field.as_str(), message.as_str()),
                ("input.action", want.as_str()),
                "{case}"
            )
        }
        other => panic!("{case}: want the action rejected, got {other:?}"),
    }
    assert_eq!(calls.calls(), 0, "{case}: rejected before any call");
}

/// Asserts `result` is `AmiPipeline.Throttled` after the SDK's three attempts of `rule`.
pub fn assert_throttled<T: std::fmt::Debug>(result: ami_core::Result<T>, rule: &aws_smithy_mocks::Rule) {
    match result {
        Err(err) => assert_eq!(err.error_type(), "AmiPipeline.Throttled", "{err}"),
        Ok(out) => panic!("want Throttled, got {out:?}"),
    }
    assert_eq!(
        rule.num_calls(),
        3,
        "the SDK's three attempts, then Step Functions retries"
    );
}

/// Generates the tests every step must pass, with the same names in every crate:
///
/// - `malformed_input_names_the_field_and_calls_nothing`: each `(change, field)` edit of a valid `request` is
///   refused as `InvalidInput` naming `field`, before any call (`setup` returns the deps and their call counter,
///   fresh per case);
/// - `actions_a_step_does_not_take_are_rejected_by_name` (optional, for a [`Step`](ami_core::step::Step)):
///   `request` with each action of `rejects` (none for a step that takes all three) is refused as `InvalidInput`
///   at `input.action`, naming the step and the actions it takes, and an unknown action too, before any call;
/// - `persistent_throttling_surfaces_as_throttled` (optional): with `rule` (see `throttled_always!`) tried first,
///   the handler fails `AmiPipeline.Throttled` after the SDK's three attempts.
///
/// `handle` is `async fn(&Deps, Value) -> Result<_>`, by default `ami_core::step::handle`; crate-specific
/// assertions stay in crate-specific tests.
/// Instead of `setup`, `deps: |calls: &Calls| ...` makes the deps from clients counted by `calls` that answer
/// nothing (`calls.clients(&[], &[])`, `calls.ec2(&[])`, ...).
#[macro_export]
macro_rules! step_contract_tests {
    (deps: $($rest:tt)*) => {
        $crate::step_contract_tests! { handle: $crate::contract::handle, deps: $($rest)* }
    };
    (setup: $($rest:tt)*) => {
        $crate::step_contract_tests! { handle: $crate::contract::handle, setup: $($rest)* }
    };
    (handle: $handle:expr, deps: $deps:expr, $($rest:tt)*) => {
        $crate::step_contract_tests! {
            handle: $handle,
            setup: || {
                let calls = $crate::Calls::default();
                let deps = ($deps)(&calls);
                (deps, calls)
            },
            $($rest)*
        }
    };
    (
        handle: $handle:expr,
        setup: $setup:expr,
        request: $request:expr,
        malformed: [ $( ($change:expr, $field:expr $(,)?) ),* $(,)? ]
        $(, rejects: [ $($action:literal),* $(,)? ] )?
        $(, persistent_throttling: { rule: $rule:expr, deps: $tdeps:expr $(,)? } )?
        $(,)?
    ) => {
        #[tokio::test]
        async fn malformed_input_names_the_field_and_calls_nothing() {
            let cases: Vec<(fn(&mut serde_json::Value), &str)> = vec![$(($change, $field)),*];
            assert!(!cases.is_empty());
            for (change, want) in cases {
                let (deps, calls) = ($setup)();
                let req = $crate::contract::changed(($request)(), change);
                let result = ($handle)(&deps, req.clone()).await;
                $crate::contract::assert_refused(result, want, &calls, &req);
            }
        }

        $(
            #[tokio::test]
            async fn actions_a_step_does_not_take_are_rejected_by_name() {
                let actions: &[&str] = &[$($action),*];
                for action in actions {
                    let (deps, calls) = ($setup)();
                    let mut req = ($request)();
                    req["action"] = serde_json::json!(action);
                    let result = ($handle)(&deps, req.clone()).await;
                    $crate::contract::assert_rejected(&deps, result, &calls, &req);
                }
                // An action no step takes does not parse.
                let (deps, calls) = ($setup)();
                let req = serde_json::json!({"action": "explode"});
                $crate::contract::assert_refused(($handle)(&deps, req.clone()).await, "input.action", &calls, &req);
            }
        )?

        $(
            #[tokio::test]
            async fn persistent_throttling_surfaces_as_throttled() {
                let rule: aws_smithy_mocks::Rule = $rule;
                let deps = ($tdeps)(rule.clone());
                let result = ($handle)(&deps, ($request)()).await;
                $crate::contract::assert_throttled(result, &rule);
            }
        )?
    };
}
