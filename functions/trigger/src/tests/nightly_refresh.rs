//! The nightly refresh of every stored recipe (issue 21 item 6).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_sdk_ssm::operation::get_parameters_by_path::{GetParametersByPathInput, GetParametersByPathOutput};

use ami_core::model::steps::RefreshOutput;

use super::*;
use crate::nightly::{self, Clock, Pacing};

/// The schedule's input, as the template's NightlySchedule sends it.
fn refresh_all() -> Value {
    json!({"refresh": "all", "scheduled_time": "2026-11-26T03:00:00Z"})
}

/// A clock that only moves when slept on (or advanced by a test): each refresh's start time is exact, and no test
/// waits.
#[derive(Default)]
struct FakeClock {
    now: Mutex<Duration>,
    sleeps: Mutex<Vec<Duration>>,
}

impl FakeClock {
    fn advance(&self, d: Duration) {
        *self.now.lock().unwrap() += d;
    }
    fn sleeps(&self) -> Vec<Duration> {
        self.sleeps.lock().unwrap().clone()
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        *self.now.lock().unwrap()
    }
    fn sleep(&self, d: Duration) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        self.advance(d);
        self.sleeps.lock().unwrap().push(d);
        Box::pin(std::future::ready(()))
    }
}

/// `deps` refreshing at one pipeline a second, at most `max` a run, on `clock`.
fn paced(mut deps: Deps, clock: &Arc<FakeClock>, max: usize) -> Deps {
    deps.nightly = Pacing {
        clock: clock.clone(),
        interval: Duration::from_secs(1),
        max_pipelines: max,
    };
    deps
}

/// The example recipe stored for pipeline `name`, with `edit` applied.
fn recipe_named(name: &str, edit: impl FnOnce(&mut Value)) -> String {
    let mut r: Value = serde_json::from_str(testing::EXAMPLE_RECIPE).unwrap();
    r["name"] = json!(name);
    edit(&mut r);
    r.to_string()
}

fn stored(name: &str, text: String) -> Parameter {
    Parameter::builder()
        .name(format!("{DEFAULT_RECIPE_PREFIX}/{name}"))
        .value(text)
        .build()
}

/// GetParametersByPath answering `pages` in turn (page n's token is `t<n>`); every request kept in `captured`.
fn listed(captured: &Captured<GetParametersByPathInput>, pages: Vec<Vec<Parameter>>) -> Rule {
    let cap = captured.clone();
    mock!(Ssm::get_parameters_by_path).then_compute_output(move |r| {
        cap.push(r);
        let n: usize = r
            .next_token()
            .and_then(|t| t.strip_prefix('t'))
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let mut out = GetParametersByPathOutput::builder().set_parameters(pages.get(n).cloned());
        if n + 1 < pages.len() {
            out = out.next_token(format!("t{}", n + 1));
        }
        out.build()
    })
}

/// The newest released image of `pipeline`, built from `base`.
fn newest_of(pipeline: &'static str, base: &'static str) -> Rule {
    let image = Image::builder()
        .image_id("ami-0ddddddddddddddd1")
        .creation_date("2026-11-25T00:00:00.000Z")
        .tags(Tag::builder().key(tags::RELEASE).value("1.3.9").build())
        .tags(Tag::builder().key(tags::SOURCE_IMAGE).value(base).build())
        .build();
    mock!(Ec2::describe_images)
        .match_requests(move |r| {
            r.owners() == ["self"]
                && (r.filters().iter())
                    .any(|f| f.name() == Some("tag:ami-pipeline:pipeline") && f.values() == [pipeline])
        })
        .then_output(move || DescribeImagesOutput::builder().images(image.clone()).build())
}

/// StartExecution started, each request kept with the (fake) time it was made.
fn start_at(clock: &Arc<FakeClock>, starts: &Arc<Mutex<Vec<(String, Duration)>>>) -> Rule {
    let (clock, starts) = (clock.clone(), starts.clone());
    mock!(Sfn::start_execution).then_compute_output(move |r| {
        let name = r.name().unwrap_or_default().to_string();
        starts.lock().unwrap().push((name.clone(), clock.now()));
        StartExecutionOutput::builder()
            .execution_arn(format!(
                "arn:aws:states:us-east-1:123456789012:execution:ami-pipeline:{name}"
            ))
            .start_date(aws_smithy_types_now())
            .build()
            .unwrap()
    })
}

fn names(list: &[TriggerOutput]) -> Vec<&str> {
    list.iter().map(|o| o.pipeline.as_str()).collect()
}

/// Three stored recipes, listed over two pages: `alpha` built from an older base image (a run starts), `bravo`
/// broken (refused with its field, and the others still refreshed), `charlie` built from the current base (nothing
/// to do). Each pipeline's checks start a second after the previous one's, on the injected clock.
#[tokio::test]
async fn the_nightly_refresh_starts_the_changed_pipeline_skips_the_unchanged_and_refuses_the_broken_one() {
    let clock = Arc::new(FakeClock::default());
    let starts = Arc::default();
    let listing = Captured::default();
    let list = listed(
        &listing,
        vec![
            vec![
                stored("alpha", recipe_named("alpha", |_| {})),
                stored("bravo", recipe_named("bravo", |r| r["retention"]["keep"] = json!(0))),
            ],
            vec![stored("charlie", recipe_named("charlie", |_| {}))],
        ],
    );
    let (changed, unchanged) = (
        newest_of("alpha", "ami-0aaaaaaaaaaaaaa00"),
        newest_of("charlie", BASE_IMAGE),
    );
    let (base, sfn) = (base_images(), start_at(&clock, &starts));
    let deps = paced(deps(&[&changed, &unchanged, &base], &[&list], &[&sfn]), &clock, 250);

    let out = respond(&deps, refresh_all()).await.unwrap();
    let out: RefreshOutput = serde_json::from_value(out).unwrap();
    assert_eq!(out.day, "20261126");
    assert_eq!(names(&out.started), ["alpha"]);
    assert_eq!(
        out.started[0].execution_name, "alpha-s-20261126",
        "the day's name, as a one-pipeline schedule's"
    );
    assert_eq!(out.started[0].version.as_deref(), Some("1.3.9"));
    assert_eq!(names(&out.unchanged), ["charlie"]);
    assert!(out.unchanged[0].reason.as_deref().unwrap().contains(BASE_IMAGE));
    let [refused] = &out.refused[..] else { panic!("{out:?}") };
    assert_eq!(
        (refused.pipeline.as_str(), refused.error.as_str()),
        ("bravo", "AmiPipeline.InvalidInput")
    );
    assert!(refused.reason.contains("recipe.retention.keep"), "{refused:?}");
    assert!(out.duplicate.is_empty() && out.opted_out.is_empty());

    // listed under the prefix, one level deep, every page
    let requests = listing.all();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.path(), Some(DEFAULT_RECIPE_PREFIX));
        assert_eq!(r.recursive(), Some(false));
    }
    assert_eq!(requests[0].next_token(), None);
    assert_eq!(requests[1].next_token(), Some("t1"));
    // paced: charlie's checks began a second after alpha's (the broken recipe made no call and took no turn)
    assert_eq!(clock.sleeps(), [Duration::from_secs(1)]);
    let started = starts.lock().unwrap().clone();
    assert_eq!(started, [("alpha-s-20261126".to_string(), Duration::ZERO)]);
}

/// Starts are a second apart on the injected clock; a refresh slower than that is not followed by a wait (the pace
/// is kept between starts, not added to them).
#[tokio::test]
async fn refreshes_start_one_second_apart_and_a_slow_one_adds_no_wait() {
    let clock = Arc::new(FakeClock::default());
    let starts: Arc<Mutex<Vec<(String, Duration)>>> = Arc::default();
    let always = |name: &'static str| stored(name, recipe_named(name, |r| r["refresh"] = json!("always")));
    let list = listed(
        &Captured::default(),
        vec![vec![always("a"), always("b"), always("c"), always("d")]],
    );
    // b's look-up of its newest image takes 2.5 s
    let slow_clock = clock.clone();
    let slow = mock!(Ec2::describe_images)
        .match_requests(|r| r.filters().iter().any(|f| f.values() == ["b"]))
        .then_compute_output(move |_| {
            slow_clock.advance(Duration::from_millis(2500));
            DescribeImagesOutput::builder().build()
        });
    let none = testing::finds_no_images(mock!(Ec2::describe_images).match_requests(|r| r.owners() == ["self"]));
    let sfn = start_at(&clock, &starts);
    let deps = paced(deps(&[&slow, &none], &[&list], &[&sfn]), &clock, 250);
    let out = nightly::run(
        &deps,
        &ami_core::model::event::refresh_all(&refresh_all()).unwrap().unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(names(&out.started), ["a", "b", "c", "d"]);
    let at: Vec<f64> = starts.lock().unwrap().iter().map(|(_, t)| t.as_secs_f64()).collect();
    assert_eq!(
        at,
        [0.0, 3.5, 3.5, 4.5],
        "a at 0; b began at 1 and took 2.5 s; c at once; d a second after c"
    );
    assert_eq!(clock.sleeps(), [Duration::from_secs(1), Duration::from_secs(1)]);
}

/// `refresh: never` opts a pipeline out (no call for it, no turn); beyond the run's limit, pipelines are refused with
/// the fix, in name order, and the others are still refreshed.
#[tokio::test]
async fn opted_out_pipelines_are_listed_and_pipelines_beyond_the_limit_are_refused_with_the_fix() {
    let clock = Arc::new(FakeClock::default());
    let never = stored(
        "aa-legacy",
        recipe_named("aa-legacy", |r| r["refresh"] = json!("never")),
    );
    let always = |name: &'static str| stored(name, recipe_named(name, |r| r["refresh"] = json!("always")));
    let list = listed(&Captured::default(), vec![vec![never, always("b"), always("c")]]);
    let none = testing::finds_no_images(mock!(Ec2::describe_images).match_requests(|r| r.owners() == ["self"]));
    let sfn = start_at(&clock, &Arc::default());
    let deps = paced(deps(&[&none], &[&list], &[&sfn]), &clock, 1);
    let out: RefreshOutput = serde_json::from_value(respond(&deps, refresh_all()).await.unwrap()).unwrap();
    assert_eq!(out.opted_out, ["aa-legacy"]);
    assert_eq!(names(&out.started), ["b"]);
    let [refused] = &out.refused[..] else { panic!("{out:?}") };
    assert_eq!(refused.pipeline, "c");
    for want in ["at most 1 pipelines a run", r#"{"pipeline": "c", "scheduled_time""#] {
        assert!(refused.reason.contains(want), "{want}: {refused:?}");
    }
    assert_eq!(sfn.num_calls(), 1);
}

/// A pipeline whose start is throttled (after the SDK's retries) is listed, the others are refreshed, and the run
/// then fails `Transient` so Lambda retries it; in the retry the day's names make the started ones duplicates.
#[tokio::test]
async fn a_throttled_pipeline_does_not_stop_the_others_and_fails_the_run_for_a_retry() {
    let clock = Arc::new(FakeClock::default());
    let always = |name: &'static str| stored(name, recipe_named(name, |r| r["refresh"] = json!("always")));
    let list = listed(&Captured::default(), vec![vec![always("a"), always("b")]]);
    let none = testing::finds_no_images(mock!(Ec2::describe_images).match_requests(|r| r.owners() == ["self"]));
    let throttled = mock!(Sfn::start_execution)
        .match_requests(|r| r.name().is_some_and(|n| n.starts_with("a-s-")))
        .sequence()
        .http_status(400, Some(testing::json_error_body("ThrottlingException")))
        .repeatedly()
        .build();
    let started = Captured::default();
    let sfn = start_execution(started.clone());
    let deps = paced(deps(&[&none], &[&list], &[&throttled, &sfn]), &clock, 250);
    let err = respond(&deps, refresh_all()).await.unwrap_err();
    testing::assert_error(
        &err,
        "AmiPipeline.Transient",
        &["1 pipelines may succeed on a retry", "a: throttled", "started 1"],
    );
    assert_eq!(started.only().name(), Some("b-s-20261126"));
}
