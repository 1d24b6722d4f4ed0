//! The recipe's scripts as the instances run them: the Run Command script (`run_command_script`, the default
//! channel: guarded to run once, leaving nothing in the image), and the console channel's user data and markers.
//!
//! Console channel: the builder runs the provisioning script once, prints exactly one result line to the serial
//! console, and powers off (shutdown behaviour `stop`), so the build handler can read the outcome with
//! `GetConsoleOutput` and snapshot a stopped, quiet instance. The test instance prints a smoke-test line and stays up.

use crate::model::recipe::{Channel, Platform};
use crate::model::runcommand::{Purpose, once_key};
use crate::model::steps::{Release, Run};

/// Marks builder user data (also what the local EC2 emulator keys on to play the guest).
pub const BUILDER_TAG: &str = "AMI-PIPELINE-BUILDER";
pub const SMOKE_TAG: &str = "AMI-PIPELINE-SMOKE";
pub const RESULT_PREFIX: &str = "AMI-PIPELINE-RESULT: ";
pub const SMOKE_PREFIX: &str = "AMI-PIPELINE-SMOKE: ";
/// Heredoc terminator; a script may not contain it (checked in recipe validation).
pub const HEREDOC_END: &str = "AMI_PIPELINE_SCRIPT_END";

/// Replaces `{{version}}`, `{{commit}}`, `{{artifact}}` and `{{pipeline}}`. The values were checked on the way
/// in (`naming::check_*`) to a character set that has no meaning to a shell or PowerShell.
pub fn render_script(script: &str, pipeline: &str, release: &Release) -> String {
    script
        .replace("{{version}}", &release.version)
        .replace("{{commit}}", release.commit.as_deref().unwrap_or(""))
        .replace("{{artifact}}", release.artifact.as_deref().unwrap_or(""))
        .replace("{{pipeline}}", pipeline)
}

/// Marks user data whose instance gets its script by SSM Run Command (the local EC2 emulator's guest then runs
/// nothing from user data).
pub const RUN_COMMAND_MARK: &str = "channel=run-command";

/// The builder's user data for `run`. With the `run-command` channel it runs nothing: the build step sends the
/// script once the agent is online (`run_command_script`), and stops the instance itself after success.
pub fn builder(run: &Run, execution: &str, platform: Platform, script: &str) -> String {
    if run.recipe.build_channel() == Channel::RunCommand {
        return run_command_user_data(BUILDER_TAG, execution, platform);
    }
    let body = render_script(script, &run.pipeline, &run.release);
    match platform {
        Platform::Linux => format!(
            r#"#!/bin/bash
# {BUILDER_TAG} execution={execution}
# Runs the recipe's provisioning script once, prints one result line to the console, then powers off.
exec > >(tee -a /var/log/ami-pipeline-build.log) 2>&1
marker() {{ echo "$1"; echo "$1" > /dev/console 2>/dev/null || true; echo "$1" > /dev/ttyS0 2>/dev/null || true; }}
install -d -m 700 /var/lib/ami-pipeline
cat > /var/lib/ami-pipeline/provision.sh <<'{HEREDOC_END}'
{body}
{HEREDOC_END}
export AMI_PIPELINE_PIPELINE='{pipeline}' AMI_PIPELINE_VERSION='{version}'
bash /var/lib/ami-pipeline/provision.sh
rc=$?
rm -rf /var/lib/ami-pipeline
if [ "$rc" -eq 0 ]; then
  cloud-init clean --logs >/dev/null 2>&1 || true
  marker "{RESULT_PREFIX}SUCCESS"
else
  marker "{RESULT_PREFIX}FAILURE exit=$rc"
fi
sync
shutdown -h now
"#,
            pipeline = run.pipeline,
            version = run.release.version,
        ),
        Platform::Windows => format!(
            r#"<powershell>
# {BUILDER_TAG} execution={execution}
# Runs the recipe's provisioning script once, prints one result line to COM1 (the console), then sysprep
# shuts the instance down.
function Marker($m) {{ try {{ $p = New-Object System.IO.Ports.SerialPort COM1,115200; $p.Open(); $p.WriteLine($m); $p.Close() }} catch {{ }}; Write-Output $m }}
$env:AMI_PIPELINE_PIPELINE = '{pipeline}'; $env:AMI_PIPELINE_VERSION = '{version}'
$script = @'
{body}
'@
$path = Join-Path $env:TEMP 'ami-pipeline-provision.ps1'
Set-Content -Path $path -Value $script
& powershell.exe -NoProfile -ExecutionPolicy Bypass -File $path
$rc = $LASTEXITCODE
Remove-Item $path -Force
if ($rc -eq 0) {{
  Marker "{RESULT_PREFIX}SUCCESS"
  & "$env:ProgramFiles\Amazon\EC2Launch\EC2Launch.exe" sysprep --shutdown=true
}} else {{
  Marker "{RESULT_PREFIX}FAILURE exit=$rc"
  Stop-Computer -Force
}}
</powershell>
"#,
            pipeline = run.pipeline,
            version = run.release.version,
        ),
    }
}

/// User data that only names the instance's role and channel (a comment: nothing runs).
fn run_command_user_data(tag: &str, execution: &str, platform: Platform) -> String {
    let line = format!("# {tag} execution={execution} {RUN_COMMAND_MARK}\n# The script comes by SSM Run Command.\n");
    match platform {
        Platform::Linux => format!("#!/bin/bash\n{line}"),
        Platform::Windows => format!("<powershell>\n{line}</powershell>\n"),
    }
}

/// The test instance's user data: runs the smoke test at boot and prints its result (console channel), or only
/// marks the instance (run-command channel: the step sends the smoke test). `None` without a script.
pub fn smoke_test(run: &Run, execution: &str, platform: Platform, script: Option<&str>) -> Option<String> {
    if run.recipe.test_channel() == Channel::RunCommand {
        return script.map(|_| run_command_user_data(SMOKE_TAG, execution, platform));
    }
    let body = render_script(script?, &run.pipeline, &run.release);
    Some(match platform {
        Platform::Linux => format!(
            r#"#!/bin/bash
# {SMOKE_TAG} execution={execution}
marker() {{ echo "$1"; echo "$1" > /dev/console 2>/dev/null || true; echo "$1" > /dev/ttyS0 2>/dev/null || true; }}
cat > /tmp/ami-pipeline-smoke.sh <<'{HEREDOC_END}'
{body}
{HEREDOC_END}
bash /tmp/ami-pipeline-smoke.sh
rc=$?
if [ "$rc" -eq 0 ]; then marker "{SMOKE_PREFIX}PASS"; else marker "{SMOKE_PREFIX}FAIL exit=$rc"; fi
"#
        ),
        Platform::Windows => format!(
            r#"<powershell>
# {SMOKE_TAG} execution={execution}
function Marker($m) {{ try {{ $p = New-Object System.IO.Ports.SerialPort COM1,115200; $p.Open(); $p.WriteLine($m); $p.Close() }} catch {{ }}; Write-Output $m }}
$script = @'
{body}
'@
$path = Join-Path $env:TEMP 'ami-pipeline-smoke.ps1'
Set-Content -Path $path -Value $script
& powershell.exe -NoProfile -ExecutionPolicy Bypass -File $path
if ($LASTEXITCODE -eq 0) {{ Marker "{SMOKE_PREFIX}PASS" }} else {{ Marker "{SMOKE_PREFIX}FAIL exit=$LASTEXITCODE" }}
</powershell>
"#
        ),
    })
}

/// Where the Linux guard lives: `/run` is a tmpfs, so neither the guard nor the script copy in it is ever part of
/// a snapshot (the variable is for tests of the guard).
const LINUX_RUN_DIR: &str = "${AMI_PIPELINE_RUN_DIR:-/run/ami-pipeline}";

/// The script Run Command runs for `purpose`: the recipe's script (rendered), guarded to run once per instance and
/// execution, as SSM may get it twice (a second SendCommand after a lost answer, `runcommand`). The guard is an
/// atomic `mkdir` (Linux, under /run) / `New-Item` (Windows); a second copy prints the guard line and exits 0,
/// and the reconciler follows the first command. `AMI-PIPELINE-ONCE: <key>` is also what the local emulator keys on.
/// A body that exits 194 (Linux) / 3010 (Windows) asks the agent to reboot and restart the script ("Handling reboots
/// when running commands", Systems Manager User Guide): the guard is removed then, so the restarted script runs the
/// body again, which AWS asks to be idempotent.
///
/// Nothing of the build stays in the image. The script's copy is removed when it ends, its output goes to Run
/// Command (CloudWatch Logs), not to a file. The SSM agent keeps every command's script and output under
/// /var/lib/amazon/ssm/<instance-id> (orchestration and command state) and writes this command's result there
/// after the script exits, so on Linux a successful build registers a runtime systemd unit (under /run/systemd, not
/// in the image) ordered before the agent: units stop in the reverse of their start order, so when the step's
/// StopInstances shuts the OS down, the unit's ExecStop runs after the agent has reported Success and stopped, and
/// removes the agent's instance folder and logs and cloud-init's per-instance state. On Windows the sysprep command
/// (`sysprep_script`) does the same for the build command before sysprep generalizes the image.
pub fn run_command_script(run: &Run, execution: &str, platform: Platform, purpose: Purpose, script: &str) -> String {
    let body = render_script(script, &run.pipeline, &run.release);
    let key = once_key(execution, purpose);
    let (pipeline, version) = (&run.pipeline, &run.release.version);
    match platform {
        Platform::Linux => {
            let scrub = if purpose == Purpose::Build { LINUX_SCRUB } else { "" };
            format!(
                r#"#!/bin/bash
# AMI-PIPELINE-ONCE: {key}
# ami-pipeline {purpose} for execution {execution}: the body runs once on this instance, however often it is sent.
base="{LINUX_RUN_DIR}"
install -d -m 700 "$base"
if ! mkdir -m 700 "$base/{key}" 2>/dev/null; then
  echo "AMI-PIPELINE-ONCE: {key} already ran"
  exit 0
fi
cat > "$base/{key}/script.sh" <<'{HEREDOC_END}'
{body}
{HEREDOC_END}
export AMI_PIPELINE_PIPELINE='{pipeline}' AMI_PIPELINE_VERSION='{version}'
bash "$base/{key}/script.sh"
rc=$?
rm -f "$base/{key}/script.sh"
# 194 asks the agent to reboot and run this script again: the body must run again then
if [ "$rc" -eq 194 ]; then rm -rf "$base/{key}"; fi
{scrub}exit $rc
"#,
                purpose = purpose.as_str()
            )
        }
        Platform::Windows => format!(
            r#"# AMI-PIPELINE-ONCE: {key}
# ami-pipeline {purpose} for execution {execution}: the body runs once on this instance, however often it is sent.
$base = Join-Path $env:SystemRoot 'Temp\ami-pipeline'
New-Item -ItemType Directory -Force -Path $base | Out-Null
try {{ New-Item -ItemType Directory -Path (Join-Path $base '{key}') -ErrorAction Stop | Out-Null }}
catch {{ Write-Output "AMI-PIPELINE-ONCE: {key} already ran"; exit 0 }}
$env:AMI_PIPELINE_PIPELINE = '{pipeline}'; $env:AMI_PIPELINE_VERSION = '{version}'
$path = Join-Path $base '{key}\script.ps1'
Set-Content -Path $path -Value @'
{body}
'@
& powershell.exe -NoProfile -ExecutionPolicy Bypass -File $path
$rc = $LASTEXITCODE
Remove-Item $path -Force
# 3010 asks the agent to reboot and run this script again: the body must run again then (this folder survives it)
if ($rc -eq 3010) {{ Remove-Item -Recurse -Force (Join-Path $base '{key}') }}
exit $rc
"#,
            purpose = purpose.as_str()
        ),
    }
}

/// After a successful build: the agent's traces are removed at shutdown (see `run_command_script`). The agent's
/// systemd unit has `KillMode=process` (amazon-ssm-agent, `packaging/linux/amazon-ssm-agent.service`): stopping it
/// ends only its main process, and the workers it started stay ("On Unix system, orphan is not be killed by systemd",
/// the agent's `outofproc/proc/process.go`) until systemd's final kill, after every unit's `ExecStop`; a worker could
/// write the agent's folder again after it was removed. So the scrub, which stops after the agent, first ends what is
/// left in the agent's control group and waits for it to be gone, then removes. The scrub itself lives under `/run`
/// (a tmpfs, never in the image); `AMI_PIPELINE_SCRUB_ROOT` moves every path it touches, for tests.
const LINUX_SCRUB: &str = r#"if [ "$rc" -eq 0 ]; then
  cloud-init clean --logs >/dev/null 2>&1 || true
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    cat > /run/ami-pipeline-scrub.sh <<'SCRUB'
r="${AMI_PIPELINE_SCRUB_ROOT:-}"
pids=""
for unit in amazon-ssm-agent.service snap.amazon-ssm-agent.amazon-ssm-agent.service; do
  for procs in "$r/sys/fs/cgroup/system.slice/$unit/cgroup.procs" \
               "$r/sys/fs/cgroup/systemd/system.slice/$unit/cgroup.procs" \
               "$r/sys/fs/cgroup/unified/system.slice/$unit/cgroup.procs"; do
    if [ -r "$procs" ]; then pids="$pids $(cat "$procs")"; fi
  done
done
alive() { s=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }
if [ -n "${pids# }" ]; then
  kill -KILL $pids 2>/dev/null
  n=0
  for p in $pids; do
    while alive "$p" && [ "$n" -lt 100 ]; do sleep 0.1; n=$((n + 1)); done
  done
fi
rm -rf "$r"/var/lib/amazon/ssm/i-* "$r"/var/lib/amazon/ssm/mi-* "$r"/var/log/amazon/ssm/* "$r/run/ami-pipeline"
SCRUB
    cat > /run/systemd/system/ami-pipeline-scrub.service <<'UNIT'
[Unit]
Description=ami-pipeline: remove the build's Run Command traces when the builder stops
Before=amazon-ssm-agent.service snap.amazon-ssm-agent.amazon-ssm-agent.service
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/bin/sh /run/ami-pipeline-scrub.sh
UNIT
    systemctl daemon-reload && systemctl start ami-pipeline-scrub.service
  fi
fi
"#;

/// Windows, after the build script succeeded: sysprep through EC2Launch v2 (which generalizes the image), without
/// its shutdown (the console channel's `--shutdown=true`), run as a second command so that its failure is reported as
/// a failure with its output, not as a builder that never stopped. Before it, the build's guard and script folder
/// and the agent's folders of earlier commands and its logs are removed; the step stops the instance once this
/// command succeeded.
pub fn sysprep_script(execution: &str) -> String {
    let key = once_key(execution, Purpose::Sysprep);
    let build_key = once_key(execution, Purpose::Build);
    format!(
        r#"# AMI-PIPELINE-ONCE: {key}
# ami-pipeline sysprep for execution {execution}
$base = Join-Path $env:SystemRoot 'Temp\ami-pipeline'
try {{ New-Item -ItemType Directory -Force -Path $base | Out-Null; New-Item -ItemType Directory -Path (Join-Path $base '{key}') -ErrorAction Stop | Out-Null }}
catch {{ Write-Output "AMI-PIPELINE-ONCE: {key} already ran"; exit 0 }}
# Earlier commands' scripts and output (this command's own files are in use and stay: see DEPLOY.md).
Remove-Item -Recurse -Force (Join-Path $env:ProgramData 'Amazon\SSM\InstanceData\*\document\orchestration\*') -ErrorAction SilentlyContinue
Remove-Item -Recurse -Force (Join-Path $env:ProgramData 'Amazon\SSM\Logs\*') -ErrorAction SilentlyContinue
Remove-Item -Recurse -Force (Join-Path $base '{build_key}') -ErrorAction SilentlyContinue
# --shutdown=false: the agent reports this command's result first; the step then stops the instance
& "$env:ProgramFiles\Amazon\EC2Launch\EC2Launch.exe" sysprep --shutdown=false
exit $LASTEXITCODE
"#
    )
}

/// The outcome a marker line reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
}

/// The last line in `console` that starts with `prefix`, read as `SUCCESS`/`PASS` or a failure with its detail.
fn last_marker(console: &str, prefix: &str, ok_word: &str) -> Option<Outcome> {
    console.lines().rev().find_map(|line| {
        let at = line.find(prefix)?;
        let rest = line[at + prefix.len()..].trim();
        Some(if rest == ok_word {
            Outcome::Passed
        } else {
            Outcome::Failed(rest.chars().take(200).collect())
        })
    })
}

pub fn build_result(console: &str) -> Option<Outcome> {
    last_marker(console, RESULT_PREFIX, "SUCCESS")
}

pub fn smoke_result(console: &str) -> Option<Outcome> {
    last_marker(console, SMOKE_PREFIX, "PASS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_read_from_the_last_line() {
        assert_eq!(
            build_result("boot\n[  1.0] AMI-PIPELINE-RESULT: SUCCESS\n"),
            Some(Outcome::Passed)
        );
        assert_eq!(
            build_result("AMI-PIPELINE-RESULT: SUCCESS\nAMI-PIPELINE-RESULT: FAILURE exit=3"),
            Some(Outcome::Failed("FAILURE exit=3".into()))
        );
        assert_eq!(build_result("nothing yet"), None);
        assert_eq!(smoke_result("AMI-PIPELINE-SMOKE: PASS"), Some(Outcome::Passed));
        assert!(matches!(
            smoke_result("AMI-PIPELINE-SMOKE: FAIL exit=1"),
            Some(Outcome::Failed(_))
        ));
    }

    fn run_with_channel(channel: Channel) -> Run {
        let mut recipe: crate::model::recipe::Recipe = serde_json::from_str(crate::model::recipe::EXAMPLE).unwrap();
        if let Some(b) = recipe.build.as_mut() {
            b.channel = channel;
        }
        Run {
            pipeline: "web".into(),
            // by its wire form: other fields have defaults
            release: serde_json::from_value(serde_json::json!({"version": "1.4.0"})).unwrap(),
            trigger: crate::model::steps::TriggerKind::Release,
            region: "us-east-1".into(),
            date: "20261127".into(),
            recipe,
            build: true,
            regions: vec!["us-east-1".into()],
            adopted: None,
        }
    }

    #[test]
    fn the_run_once_guard_runs_the_body_once_and_keeps_its_exit_code() {
        let dir = std::env::temp_dir().join(format!("ami-pipeline-guard-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let count = dir.join("count");
        let run = run_with_channel(Channel::RunCommand);
        let body = format!(
            "echo ran >> {}\necho \"{{{{pipeline}}}} {{{{version}}}}\"\nexit 3",
            count.display()
        );
        let script = run_command_script(&run, "web-r-1-4-0", Platform::Linux, Purpose::Smoke, &body);
        let once = |script: &str| {
            std::process::Command::new("bash")
                .arg("-c")
                .arg(script)
                .env("AMI_PIPELINE_RUN_DIR", dir.join("run"))
                .output()
                .unwrap()
        };
        let first = once(&script);
        assert_eq!(first.status.code(), Some(3), "the body's exit code");
        assert_eq!(String::from_utf8_lossy(&first.stdout), "web 1.4.0\n");
        let second = once(&script);
        assert_eq!(second.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&second.stdout).contains("AMI-PIPELINE-ONCE: web-r-1-4-0.smoke already ran"));
        assert_eq!(std::fs::read_to_string(&count).unwrap(), "ran\n", "the body ran once");
        // another execution's script is not stopped by this guard, and no script copy is left behind
        let other = run_command_script(&run, "web-r-1-4-1", Platform::Linux, Purpose::Smoke, &body);
        assert_eq!(once(&other).status.code(), Some(3));
        assert!(!dir.join("run/web-r-1-4-0.smoke/script.sh").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// "exit 194 ... instructs SSM Agent to reboot the managed node, and then restart the script after the reboot"
    /// ("Handling reboots when running commands"): the restarted script must run the body again, so a body that asks
    /// for the reboot leaves no guard behind (on Windows the guard's folder survives a reboot; /run does not).
    #[test]
    fn a_body_that_asks_for_a_reboot_runs_again_when_the_agent_restarts_the_script() {
        let dir = std::env::temp_dir().join(format!("ami-pipeline-reboot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let count = dir.join("count");
        let body = format!(
            "echo ran >> {0}\nif [ $(wc -l < {0}) -lt 2 ]; then exit 194; fi\nexit 0",
            count.display()
        );
        let run = run_with_channel(Channel::RunCommand);
        let script = run_command_script(&run, "web-r-1-4-0", Platform::Linux, Purpose::Build, &body);
        let once = || {
            std::process::Command::new("bash")
                .arg("-c")
                .arg(&script)
                .env("AMI_PIPELINE_RUN_DIR", dir.join("run"))
                .output()
                .unwrap()
        };
        assert_eq!(once().status.code(), Some(194), "the reboot request reaches the agent");
        assert_eq!(once().status.code(), Some(0), "the restarted script ran the body again");
        assert_eq!(std::fs::read_to_string(&count).unwrap(), "ran\nran\n");
        let windows = run_command_script(&run, "web-r-1-4-0", Platform::Windows, Purpose::Build, "exit 3010");
        assert!(windows.contains("if ($rc -eq 3010) { Remove-Item"), "{windows}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_run_command_builder_gets_no_script_in_its_user_data_and_a_console_one_does() {
        let rc = builder(
            &run_with_channel(Channel::RunCommand),
            "web-r-1",
            Platform::Linux,
            "echo secret-step",
        );
        assert!(rc.contains(BUILDER_TAG) && rc.contains(RUN_COMMAND_MARK));
        assert!(!rc.contains("secret-step") && !rc.contains("shutdown"));
        let console = builder(
            &run_with_channel(Channel::Console),
            "web-r-1",
            Platform::Linux,
            "echo secret-step",
        );
        assert!(console.contains("secret-step") && !console.contains(RUN_COMMAND_MARK));
        let build = run_command_script(
            &run_with_channel(Channel::RunCommand),
            "web-r-1",
            Platform::Linux,
            Purpose::Build,
            "true",
        );
        assert!(
            build.contains("ExecStop=/bin/sh /run/ami-pipeline-scrub.sh") && build.contains("/var/lib/amazon/ssm/i-*"),
            "the build scrubs the agent's traces"
        );
    }

    #[test]
    fn template_values_are_substituted() {
        let r = Release {
            version: "1.2.3".into(),
            commit: Some("abc1234".into()),
            artifact: None,
            ..Release::default()
        };
        assert_eq!(
            render_script("v={{version}} c={{commit}} a={{artifact}} p={{pipeline}}", "web", &r),
            "v=1.2.3 c=abc1234 a= p=web"
        );
    }

    /// The scrub, as the build registers it, run in a sandbox: a worker the agent left running (`KillMode=process`)
    /// keeps writing the agent's folder; the scrub ends it before removing, so the folder stays gone.
    #[test]
    fn the_scrub_ends_the_workers_the_agent_left_before_removing_its_folder() {
        let build = run_command_script(
            &run_with_channel(Channel::RunCommand),
            "web-r-1",
            Platform::Linux,
            Purpose::Build,
            "true",
        );
        let scrub = build
            .split_once("<<'SCRUB'\n")
            .and_then(|(_, rest)| rest.split_once("\nSCRUB\n"))
            .map(|(script, _)| script.to_string())
            .expect("the build writes a scrub script");
        let root = std::env::temp_dir().join(format!("ami-pipeline-scrub-{}", std::process::id()));
        let state = root.join("var/lib/amazon/ssm/i-0abc/document/state");
        let cgroup = root.join("sys/fs/cgroup/system.slice/amazon-ssm-agent.service");
        std::fs::create_dir_all(&state).unwrap();
        std::fs::create_dir_all(root.join("var/log/amazon/ssm")).unwrap();
        std::fs::write(root.join("var/log/amazon/ssm/amazon-ssm-agent.log"), "log").unwrap();
        std::fs::create_dir_all(&cgroup).unwrap();
        let mut worker = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while :; do mkdir -p {0}; echo x > {0}/late; sleep 0.02; done",
                state.display()
            ))
            .spawn()
            .unwrap();
        std::fs::write(cgroup.join("cgroup.procs"), format!("{}\n", worker.id())).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));

        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&scrub)
            .env("AMI_PIPELINE_SCRUB_ROOT", &root)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(std::time::Duration::from_millis(200));
        let left = root.join("var/lib/amazon/ssm/i-0abc");
        let exists = left.exists();
        let ended = worker.try_wait().unwrap();
        if ended.is_none() {
            worker.kill().unwrap();
            worker.wait().unwrap();
        }
        assert!(ended.is_some(), "the worker the agent left was ended");
        assert!(
            !exists,
            "nothing of the agent's folder is written again after the scrub"
        );
        assert!(!root.join("var/log/amazon/ssm/amazon-ssm-agent.log").exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
