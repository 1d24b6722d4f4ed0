//! One small fake of EC2 and SSM for handler tests: instances, images, snapshots, launch templates and SSM
//! parameters with their tags and states, in several regions. The `aws-smithy-mocks` rules made here answer the
//! Describe/Get calls from the world (applying the request's filters) and let the mutating calls change it, so a
//! second run of a handler sees what the first did. Every mutating call is logged ("Op region detail") and every
//! request kept, for assertions; a call on a resource of another region, or on one that does not exist, panics.

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};

use aws_sdk_ec2::Client as Ec2;
use aws_sdk_ec2::operation::create_launch_template_version::{
    CreateLaunchTemplateVersionInput, CreateLaunchTemplateVersionOutput,
};
use aws_sdk_ec2::operation::create_tags::{CreateTagsInput, CreateTagsOutput};
use aws_sdk_ec2::operation::delete_snapshot::DeleteSnapshotOutput;
use aws_sdk_ec2::operation::deregister_image::{DeregisterImageInput, DeregisterImageOutput};
use aws_sdk_ec2::operation::describe_images::{DescribeImagesInput, DescribeImagesOutput};
use aws_sdk_ec2::operation::describe_instances::DescribeInstancesOutput;
use aws_sdk_ec2::operation::describe_launch_template_versions::DescribeLaunchTemplateVersionsOutput;
use aws_sdk_ec2::operation::describe_snapshots::{DescribeSnapshotsInput, DescribeSnapshotsOutput};
use aws_sdk_ec2::operation::enable_image_deprecation::{EnableImageDeprecationInput, EnableImageDeprecationOutput};
use aws_sdk_ec2::operation::modify_launch_template::{ModifyLaunchTemplateInput, ModifyLaunchTemplateOutput};
use aws_sdk_ec2::operation::terminate_instances::TerminateInstancesOutput;
use aws_sdk_ec2::types::{
    BlockDeviceMapping, DeleteSnapshotReturnCode, EbsBlockDevice, Filter, Image, ImageState, Instance, InstanceState,
    InstanceStateName, LaunchTemplateVersion, Reservation, ResponseLaunchTemplateData, Snapshot, SnapshotReturnCodes,
    SnapshotState, Tag,
};
use aws_sdk_ssm::Client as Ssm;
use aws_sdk_ssm::operation::get_parameter::{GetParameterError, GetParameterOutput};
use aws_sdk_ssm::operation::put_parameter::{PutParameterInput, PutParameterOutput};
use aws_sdk_ssm::types::Parameter;
use aws_sdk_ssm::types::error::ParameterNotFound;
use aws_smithy_mocks::{MockResponse, Rule, mock};

use ami_core::aws::clients::{Ec2Clients, SsmClients};

pub type Tags = BTreeMap<String, String>;

/// `pairs` as a tag map.
pub fn tag_map<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Tags {
    pairs.into_iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

#[derive(Clone, Debug, PartialEq)]
pub struct FakeInstance {
    pub region: String,
    pub state: InstanceStateName,
    pub tags: Tags,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FakeImage {
    pub region: String,
    pub state: ImageState,
    /// Unix seconds (DescribeImages' CreationDate).
    pub created: i64,
    pub tags: Tags,
    /// Its block devices' snapshots, in order.
    pub snapshots: Vec<String>,
    pub deprecation: Option<i64>,
    /// DescribeImages' DeregistrationProtection, when set.
    pub protection: Option<String>,
}

impl FakeImage {
    /// An available image in `region` created at `created` with `tags` and `snapshots`.
    pub fn new(region: &str, created: i64, tags: Tags, snapshots: Vec<String>) -> Self {
        FakeImage {
            region: region.into(),
            state: ImageState::Available,
            created,
            tags,
            snapshots,
            deprecation: None,
            protection: None,
        }
    }

    fn to_image(&self, id: &str) -> Image {
        let mut b = Image::builder()
            .image_id(id)
            .state(self.state.clone())
            .creation_date(
                chrono::DateTime::from_timestamp(self.created, 0)
                    .map(|t| t.format("%Y-%m-%dT%H:%M:%S.000Z").to_string())
                    .unwrap_or_default(),
            )
            .set_tags(Some(ec2_tags(&self.tags)));
        if let Some(d) = self.deprecation {
            b = b.deprecation_time(ami_core::testing::rfc3339(d));
        }
        if let Some(p) = &self.protection {
            b = b.deregistration_protection(p);
        }
        for s in &self.snapshots {
            b = b.block_device_mappings(
                BlockDeviceMapping::builder()
                    .ebs(EbsBlockDevice::builder().snapshot_id(s).build())
                    .build(),
            );
        }
        b.build()
    }
}

/// A snapshot DescribeSnapshots lists (an image's snapshots are listed only if added too).
#[derive(Clone, Debug, PartialEq)]
pub struct FakeSnapshot {
    pub region: String,
    /// Unix seconds (StartTime).
    pub started: i64,
    pub state: SnapshotState,
    pub tags: Tags,
}

impl FakeSnapshot {
    /// A completed snapshot in `region` started at `started`.
    pub fn new(region: &str, started: i64, tags: Tags) -> Self {
        FakeSnapshot {
            region: region.into(),
            started,
            state: SnapshotState::Completed,
            tags,
        }
    }
}

/// A launch template: the image of each version (version n at index n - 1), the default, and the client tokens
/// CreateLaunchTemplateVersion saw (a retried create answers the version it made).
#[derive(Clone, Debug, PartialEq)]
pub struct Template {
    pub id: String,
    pub name: String,
    pub versions: Vec<String>,
    pub default: i64,
    pub tokens: BTreeMap<String, i64>,
}

/// Any resource, as [`WorldState::resources`] lists them.
#[derive(Clone, Debug, PartialEq)]
pub enum Resource {
    Instance(FakeInstance),
    Image(FakeImage),
    Snapshot(FakeSnapshot),
}

impl Resource {
    pub fn tags(&self) -> &Tags {
        match self {
            Resource::Instance(i) => &i.tags,
            Resource::Image(i) => &i.tags,
            Resource::Snapshot(s) => &s.tags,
        }
    }
}

/// Runs once right after the next PutParameter / ModifyLaunchTemplate: another writer landing between a write and
/// its re-read.
pub type Hook = Box<dyn FnOnce(&mut WorldState) + Send>;

/// Every request the world answered, per operation, for assertions (with its region where it matters).
#[derive(Default)]
pub struct Requests {
    pub describe_images: Vec<DescribeImagesInput>,
    pub describe_snapshots: Vec<DescribeSnapshotsInput>,
    pub create_tags: Vec<(String, CreateTagsInput)>,
    pub deregister_image: Vec<DeregisterImageInput>,
    /// DeleteSnapshot's snapshot ids, in order (the images' snapshots going with DeregisterImage are not requests).
    pub delete_snapshot: Vec<String>,
    pub enable_image_deprecation: Vec<EnableImageDeprecationInput>,
    pub create_launch_template_version: Vec<(String, CreateLaunchTemplateVersionInput)>,
    pub modify_launch_template: Vec<(String, ModifyLaunchTemplateInput)>,
    pub put_parameter: Vec<(String, PutParameterInput)>,
}

#[derive(Default)]
pub struct WorldState {
    pub instances: BTreeMap<String, FakeInstance>,
    pub images: BTreeMap<String, FakeImage>,
    pub snapshots: BTreeMap<String, FakeSnapshot>,
    /// (region, template name)
    pub templates: BTreeMap<(String, String), Template>,
    /// (region, name) -> value
    pub params: BTreeMap<(String, String), String>,
    /// (region, name) -> data type, when not `aws:ec2:image`
    pub param_types: BTreeMap<(String, String), String>,
    /// How many reads a written parameter stays invisible for (SSM validates `aws:ec2:image` asynchronously);
    /// `usize::MAX`: never applied (the validation refused it).
    pub apply_after_reads: usize,
    /// (region, name) -> (written value, reads left before it shows)
    pub pending: BTreeMap<(String, String), (String, usize)>,
    /// Answer Describe calls without applying tag filters, like a lax API would.
    pub ignore_tag_filters: bool,
    /// Every mutating call, in order: "Op region detail".
    pub log: Vec<String>,
    /// Every read (Describe*, GetParameter).
    pub reads: usize,
    /// Snapshots gone, by DeleteSnapshot or with their image (DeregisterImage's DeleteAssociatedSnapshots).
    pub deleted_snapshots: Vec<String>,
    /// Snapshot -> the `DeleteSnapshotResults` code DeregisterImage answers for it instead of deleting it
    /// (`internal-error` ...), once.
    pub deregister_snapshot_errors: BTreeMap<String, String>,
    pub requests: Requests,
    pub after_put: Option<Hook>,
    pub after_modify: Option<Hook>,
}

impl WorldState {
    /// The images DeregisterImage was asked for, in order.
    pub fn deregistered(&self) -> Vec<&str> {
        self.requests
            .deregister_image
            .iter()
            .filter_map(|d| d.image_id())
            .collect()
    }

    /// Every call the world answered, reads and writes.
    pub fn calls(&self) -> usize {
        self.reads + self.log.len()
    }

    /// Instances, images and snapshots by id.
    pub fn resources(&self) -> BTreeMap<String, Resource> {
        let instances = self
            .instances
            .iter()
            .map(|(k, v)| (k.clone(), Resource::Instance(v.clone())));
        let images = self.images.iter().map(|(k, v)| (k.clone(), Resource::Image(v.clone())));
        let snapshots = self
            .snapshots
            .iter()
            .map(|(k, v)| (k.clone(), Resource::Snapshot(v.clone())));
        instances.chain(images).chain(snapshots).collect()
    }

    /// The tags of any resource.
    pub fn tags_mut(&mut self, id: &str) -> &mut Tags {
        if let Some(i) = self.instances.get_mut(id) {
            &mut i.tags
        } else if let Some(i) = self.images.get_mut(id) {
            &mut i.tags
        } else if let Some(s) = self.snapshots.get_mut(id) {
            &mut s.tags
        } else {
            panic!("no resource {id}")
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.instances.contains_key(id) || self.images.contains_key(id) || self.snapshots.contains_key(id)
    }

    /// A launch template in `region` whose `versions` default version is the last.
    pub fn template(&mut self, region: &str, name: &str, id: &str, versions: Vec<String>) {
        let default = versions.len() as i64;
        self.templates.insert(
            (region.into(), name.into()),
            Template {
                id: id.into(),
                name: name.into(),
                versions,
                default,
                tokens: BTreeMap::new(),
            },
        );
    }

    fn find_template(&mut self, region: &str, id: Option<&str>, name: Option<&str>) -> &mut Template {
        self.templates
            .iter_mut()
            .find(|((r, _), t)| r == region && (Some(t.id.as_str()) == id || Some(t.name.as_str()) == name))
            .map(|(_, t)| t)
            .unwrap_or_else(|| panic!("no launch template {id:?}/{name:?} in {region}"))
    }

    /// Whether a resource with `tags` (and, for an instance, `state`) passes `filters`.
    fn passes(&self, filters: &[Filter], tags: &Tags, state: Option<&InstanceStateName>) -> bool {
        matches(filters, tags, state, self.ignore_tag_filters)
    }

    /// [`WorldState::passes`] for a snapshot, which may also be asked for by `snapshot-id`.
    fn passes_snapshot(&self, filters: &[Filter], id: &str, tags: &Tags) -> bool {
        let (by_id, rest): (Vec<Filter>, Vec<Filter>) =
            filters.iter().cloned().partition(|f| f.name() == Some("snapshot-id"));
        by_id.iter().all(|f| f.values().iter().any(|v| v == id)) && self.passes(&rest, tags, None)
    }

    fn image_uses(&self, snapshot: &str) -> bool {
        self.images.values().any(|i| i.snapshots.iter().any(|s| s == snapshot))
    }
}

/// The world, shared by every client made from it.
#[derive(Clone, Default)]
pub struct World(Arc<Mutex<WorldState>>);

impl Deref for World {
    type Target = Mutex<WorldState>;
    fn deref(&self) -> &Mutex<WorldState> {
        &self.0
    }
}

impl World {
    pub fn new(state: WorldState) -> Self {
        World(Arc::new(Mutex::new(state)))
    }

    /// The state, whatever a panicking test left.
    pub fn state(&self) -> MutexGuard<'_, WorldState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, counting one read.
    fn read(&self) -> MutexGuard<'_, WorldState> {
        let mut w = self.state();
        w.reads += 1;
        w
    }

    /// The state, logging one write.
    fn write(&self, entry: String) -> MutexGuard<'_, WorldState> {
        let mut w = self.state();
        w.log.push(entry);
        w
    }

    /// Audited EC2 clients per region answering from the world; `first` rules (throttling, errors) are tried first.
    pub fn ec2_clients(&self, first: Vec<Rule>) -> Ec2Clients {
        let w = self.clone();
        Ec2Clients::from_fn(move |region| {
            let rules: Vec<Rule> = first.iter().cloned().chain(w.ec2_rules(region)).collect();
            ami_core::testing::ec2(&rules.iter().collect::<Vec<_>>())
        })
    }

    /// SSM clients per region answering from the world; `first` rules are tried first.
    pub fn ssm_clients(&self, first: Vec<Rule>) -> SsmClients {
        let w = self.clone();
        SsmClients::from_fn(move |region| {
            let rules: Vec<Rule> = first.iter().cloned().chain(w.ssm_rules(region)).collect();
            ami_core::testing::ssm(&rules.iter().collect::<Vec<_>>())
        })
    }

    /// Step clients answering from the world (see [`World::ec2_clients`], [`World::ssm_clients`]).
    pub fn clients(&self, first_ec2: Vec<Rule>, first_ssm: Vec<Rule>) -> ami_core::step::Clients {
        ami_core::step::Clients {
            ec2: self.ec2_clients(first_ec2),
            ssm: self.ssm_clients(first_ssm),
        }
    }

    /// The EC2 rules of one region.
    pub fn ec2_rules(&self, region: &str) -> Vec<Rule> {
        let (w, r) = (self.clone(), region.to_string());
        let describe_instances = mock!(Ec2::describe_instances).then_compute_output(move |req| {
            let w = w.read();
            let instances = w
                .instances
                .iter()
                .filter(|(id, x)| x.region == r && wanted(req.instance_ids(), id))
                .filter(|(_, x)| w.passes(req.filters(), &x.tags, Some(&x.state)))
                .map(|(id, x)| {
                    Instance::builder()
                        .instance_id(id)
                        .state(InstanceState::builder().name(x.state.clone()).build())
                        .set_tags(Some(ec2_tags(&x.tags)))
                        .build()
                })
                .collect();
            DescribeInstancesOutput::builder()
                .reservations(Reservation::builder().set_instances(Some(instances)).build())
                .build()
        });
        let (w, r) = (self.clone(), region.to_string());
        let describe_images = mock!(Ec2::describe_images).then_compute_output(move |req| {
            // A listing (no ids) is of our own images only.
            if req.image_ids().is_empty() {
                assert_eq!(req.owners(), ["self"], "only our own images");
            }
            let mut w = w.read();
            w.requests.describe_images.push(req.clone());
            let images = w
                .images
                .iter()
                .filter(|(id, i)| i.region == r && wanted(req.image_ids(), id))
                .filter(|(_, i)| w.passes(req.filters(), &i.tags, None))
                .map(|(id, i)| i.to_image(id))
                .collect();
            DescribeImagesOutput::builder().set_images(Some(images)).build()
        });
        let (w, r) = (self.clone(), region.to_string());
        let describe_snapshots = mock!(Ec2::describe_snapshots).then_compute_output(move |req| {
            assert_eq!(req.owner_ids(), ["self"], "only our own snapshots");
            let mut w = w.read();
            w.requests.describe_snapshots.push(req.clone());
            let snapshots = w
                .snapshots
                .iter()
                .filter(|(id, s)| s.region == r && wanted(req.snapshot_ids(), id))
                .filter(|(id, s)| w.passes_snapshot(req.filters(), id, &s.tags))
                .map(|(id, s)| {
                    Snapshot::builder()
                        .snapshot_id(id)
                        .state(s.state.clone())
                        .start_time(aws_smithy_types::DateTime::from_secs(s.started))
                        .set_tags(Some(ec2_tags(&s.tags)))
                        .build()
                })
                .collect();
            DescribeSnapshotsOutput::builder()
                .set_snapshots(Some(snapshots))
                .build()
        });
        let (w, r) = (self.clone(), region.to_string());
        let terminate = mock!(Ec2::terminate_instances).then_compute_output(move |req| {
            let mut w = w.state();
            for id in req.instance_ids() {
                w.log.push(format!("TerminateInstances {r} {id}"));
                let x = w.instances.get_mut(id).unwrap_or_else(|| panic!("no instance {id}"));
                assert_eq!(x.region, r, "{id} terminated in its own region");
                x.state = InstanceStateName::Terminated;
            }
            TerminateInstancesOutput::builder().build()
        });
        let (w, r) = (self.clone(), region.to_string());
        let deregister = mock!(Ec2::deregister_image).then_compute_output(move |req| {
            let id = req.image_id().unwrap_or_default();
            let mut w = w.write(format!("DeregisterImage {r} {id}"));
            w.requests.deregister_image.push(req.clone());
            // DeleteAssociatedSnapshots: the snapshots go with the image, except one another image still uses.
            assert_eq!(
                req.delete_associated_snapshots(),
                Some(true),
                "snapshots must go with the image"
            );
            let image = w.images.remove(id).unwrap_or_else(|| panic!("no image {id}"));
            assert_eq!(image.region, r, "{id} deregistered in its own region");
            // One ReturnCode per snapshot, as EC2 answers (DeleteSnapshotReturnCode).
            let mut results = Vec::new();
            for s in image.snapshots {
                let code = if w.image_uses(&s) {
                    SnapshotReturnCodes::WarnSkipped
                } else if let Some(code) = w.deregister_snapshot_errors.remove(&s) {
                    SnapshotReturnCodes::from(code.as_str())
                } else {
                    w.snapshots.remove(&s);
                    w.deleted_snapshots.push(s.clone());
                    SnapshotReturnCodes::Success
                };
                results.push(
                    DeleteSnapshotReturnCode::builder()
                        .snapshot_id(s)
                        .return_code(code)
                        .build(),
                );
            }
            DeregisterImageOutput::builder()
                .set_delete_snapshot_results(Some(results))
                .build()
        });
        let (w, r) = (self.clone(), region.to_string());
        let delete_snapshot = mock!(Ec2::delete_snapshot).then_compute_output(move |req| {
            let id = req.snapshot_id().unwrap_or_default().to_string();
            let mut w = w.write(format!("DeleteSnapshot {r} {id}"));
            w.requests.delete_snapshot.push(id.clone());
            w.deleted_snapshots.push(id.clone());
            assert!(!w.image_uses(&id), "{id} is used by a remaining image");
            let x = w.snapshots.remove(&id).unwrap_or_else(|| panic!("no snapshot {id}"));
            assert_eq!(x.region, r, "{id} deleted in its own region");
            DeleteSnapshotOutput::builder().build()
        });
        let (w, r) = (self.clone(), region.to_string());
        let create_tags = mock!(Ec2::create_tags).then_compute_output(move |req| {
            let mut w = w.write(format!("CreateTags {r} {}", req.resources().join(",")));
            w.requests.create_tags.push((r.clone(), req.clone()));
            for id in req.resources() {
                let tags = w.tags_mut(id);
                for t in req.tags() {
                    tags.insert(t.key().unwrap_or_default().into(), t.value().unwrap_or_default().into());
                }
            }
            CreateTagsOutput::builder().build()
        });
        let (w, r) = (self.clone(), region.to_string());
        let deprecate = mock!(Ec2::enable_image_deprecation).then_compute_output(move |req| {
            let id = req.image_id().unwrap_or_default();
            let mut w = w.write(format!("EnableImageDeprecation {r} {id}"));
            w.requests.enable_image_deprecation.push(req.clone());
            let at = req.deprecate_at().map(|d| d.secs());
            let image = w.images.get_mut(id).unwrap_or_else(|| panic!("no image {id}"));
            assert_eq!(image.region, r, "{id} deprecated in its own region");
            image.deprecation = at;
            EnableImageDeprecationOutput::builder().r#return(true).build()
        });
        let (w, r) = (self.clone(), region.to_string());
        let describe_versions = mock!(Ec2::describe_launch_template_versions).then_compute_output(move |req| {
            assert_eq!(req.versions(), ["$Default"]);
            let mut w = w.read();
            let t = w.find_template(&r, req.launch_template_id(), req.launch_template_name());
            let image = t.versions[(t.default - 1) as usize].clone();
            DescribeLaunchTemplateVersionsOutput::builder()
                .launch_template_versions(
                    LaunchTemplateVersion::builder()
                        .launch_template_id(&t.id)
                        .launch_template_name(&t.name)
                        .version_number(t.default)
                        .default_version(true)
                        .launch_template_data(ResponseLaunchTemplateData::builder().image_id(image).build())
                        .build(),
                )
                .build()
        });
        let (w, r) = (self.clone(), region.to_string());
        let create_version = mock!(Ec2::create_launch_template_version).then_compute_output(move |req| {
            let mut w = w.write(format!("CreateLaunchTemplateVersion {r}"));
            w.requests.create_launch_template_version.push((r.clone(), req.clone()));
            let t = w.find_template(&r, req.launch_template_id(), req.launch_template_name());
            let token = req.client_token().unwrap_or_default().to_string();
            let version = match t.tokens.get(&token) {
                Some(v) => *v,
                None => {
                    let image = req
                        .launch_template_data()
                        .and_then(|d| d.image_id())
                        .unwrap_or_default();
                    t.versions.push(image.to_string());
                    let v = t.versions.len() as i64;
                    t.tokens.insert(token, v);
                    v
                }
            };
            CreateLaunchTemplateVersionOutput::builder()
                .launch_template_version(LaunchTemplateVersion::builder().version_number(version).build())
                .build()
        });
        let (w, r) = (self.clone(), region.to_string());
        let modify = mock!(Ec2::modify_launch_template).then_compute_output(move |req| {
            let mut w = w.write(format!("ModifyLaunchTemplate {r}"));
            w.requests.modify_launch_template.push((r.clone(), req.clone()));
            let t = w.find_template(&r, req.launch_template_id(), req.launch_template_name());
            t.default = req
                .default_version()
                .and_then(|v| v.parse().ok())
                .expect("numeric version");
            if let Some(hook) = w.after_modify.take() {
                hook(&mut w);
            }
            ModifyLaunchTemplateOutput::builder().build()
        });
        vec![
            describe_instances,
            describe_images,
            describe_snapshots,
            terminate,
            deregister,
            delete_snapshot,
            create_tags,
            deprecate,
            describe_versions,
            create_version,
            modify,
        ]
    }

    /// The SSM rules of one region.
    pub fn ssm_rules(&self, region: &str) -> Vec<Rule> {
        let (w, r) = (self.clone(), region.to_string());
        let get = mock!(Ssm::get_parameter).then_compute_response(move |req| {
            let mut w = w.read();
            let key = (r.clone(), req.name().unwrap_or_default().to_string());
            if let Some((value, left)) = w.pending.get_mut(&key) {
                if *left == 0 {
                    let value = value.clone();
                    w.pending.remove(&key);
                    w.params.insert(key.clone(), value);
                } else if *left != usize::MAX {
                    *left -= 1;
                }
            }
            let data_type = w.param_types.get(&key).cloned().unwrap_or("aws:ec2:image".into());
            match w.params.get(&key) {
                Some(v) => MockResponse::Output(
                    GetParameterOutput::builder()
                        .parameter(
                            Parameter::builder()
                                .name(req.name().unwrap_or_default())
                                .value(v)
                                .data_type(data_type)
                                .build(),
                        )
                        .build(),
                ),
                None => MockResponse::Error(GetParameterError::ParameterNotFound(
                    ParameterNotFound::builder().build(),
                )),
            }
        });
        let (w, r) = (self.clone(), region.to_string());
        let put = mock!(Ssm::put_parameter).then_compute_output(move |req| {
            let mut w = w.write(format!("PutParameter {r} {}", req.name().unwrap_or_default()));
            w.requests.put_parameter.push((r.clone(), req.clone()));
            let key = (r.clone(), req.name().unwrap_or_default().to_string());
            let value = req.value().unwrap_or_default().to_string();
            let reads = w.apply_after_reads;
            if reads == 0 {
                w.params.insert(key, value);
            } else {
                w.pending.insert(key, (value, reads));
            }
            if let Some(hook) = w.after_put.take() {
                hook(&mut w);
            }
            PutParameterOutput::builder().version(1).build()
        });
        vec![get, put]
    }
}

fn ec2_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter()
        .map(|(k, v)| Tag::builder().key(k).value(v).build())
        .collect()
}

/// Whether `id` is among `ids` (none given: every id).
fn wanted(ids: &[String], id: &str) -> bool {
    ids.is_empty() || ids.iter().any(|i| i == id)
}

/// Whether a resource with `tags` (and, for an instance, `state`) passes every filter. A filter the world does
/// not know panics, so a test never passes on a filter silently ignored.
fn matches(filters: &[Filter], tags: &Tags, state: Option<&InstanceStateName>, ignore_tags: bool) -> bool {
    filters.iter().all(|f| {
        let name = f.name().unwrap_or_default();
        if let Some(key) = name.strip_prefix("tag:") {
            ignore_tags || tags.get(key).is_some_and(|v| f.values().contains(v))
        } else if name == "instance-state-name" {
            state.is_some_and(|s| f.values().iter().any(|v| v == s.as_str()))
        } else {
            panic!("unexpected filter {name}")
        }
    })
}
