//! User data that wraps the recipe's scripts, and the console markers they print.
//!
//! The builder runs the provisioning script once, prints exactly one result line to the serial console, and
//! powers off (shutdown behaviour `stop`), so the build handler can read the outcome with `GetConsoleOutput` and
//! snapshot a stopped, quiet instance. The test instance prints a smoke-test line and stays up.

use crate::recipe::Platform;
use crate::steps::{Release, Run};

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

/// The builder's user data for `run`.
pub fn builder(run: &Run, execution: &str, platform: Platform, script: &str) -> String {
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

/// The test instance's user data: runs the smoke test at boot and prints its result. `None` without a script.
pub fn smoke_test(run: &Run, execution: &str, platform: Platform, script: Option<&str>) -> Option<String> {
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

    #[test]
    fn template_values_are_substituted() {
        let r = Release {
            version: "1.2.3".into(),
            commit: Some("abc1234".into()),
            artifact: None,
        };
        assert_eq!(
            render_script("v={{version}} c={{commit}} a={{artifact}} p={{pipeline}}", "web", &r),
            "v=1.2.3 c=abc1234 a= p=web"
        );
    }
}
