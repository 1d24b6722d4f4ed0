//! Names AWS constrains: execution names, AMI names, ClientTokens, and the release values a script may use.
//!
//! Every function here is total: any input gives a valid name or a clear error, never a panic.

use sha2::{Digest, Sha256};

use crate::model::error::{Error, Result};

pub const MAX_EXECUTION_NAME: usize = 80;
pub const MAX_AMI_NAME: usize = 128;
pub const MIN_AMI_NAME: usize = 3;
pub const MAX_CLIENT_TOKEN: usize = 64;

/// Lowercase hex of SHA-256, cut to `len` characters.
pub fn short_hash(parts: &[&str], len: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]); // separator, so ("ab","c") and ("a","bc") differ
    }
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    hex[..len.min(hex.len())].to_string()
}

/// A short, safe preview of untrusted input for error messages.
pub fn preview(s: &str) -> String {
    preview_n(s, 40)
}

/// The first `max` characters of `s` without control characters, `...` marking a cut.
pub fn preview_n(s: &str, max: usize) -> String {
    let clean: String = s.chars().filter(|c| !c.is_control()).take(max).collect();
    if s.chars().count() > max {
        format!("{clean}...")
    } else {
        clean
    }
}

/// Step Functions execution names: 1-80 of letters, digits, `-` and `_`. Disallowed characters become `-`; when
/// anything was changed or cut, a hash of the original is appended so distinct inputs keep distinct names.
pub fn execution_name(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if cleaned == raw && !raw.is_empty() && raw.len() <= MAX_EXECUTION_NAME {
        return cleaned;
    }
    let suffix = short_hash(&[raw], 8);
    let keep = MAX_EXECUTION_NAME - suffix.len() - 1;
    let head: String = cleaned.chars().take(keep).collect();
    format!("{head}-{suffix}")
}

/// The execution name for a release: the same pipeline and version always give the same name.
pub fn release_execution_name(pipeline: &str, version: &str) -> String {
    execution_name(&format!("{pipeline}-r-{version}"))
}

/// The execution name for a scheduled refresh: one per pipeline and UTC day.
pub fn scheduled_execution_name(pipeline: &str, yyyymmdd: &str) -> String {
    execution_name(&format!("{pipeline}-s-{yyyymmdd}"))
}

/// A ClientToken for one create call of one execution: same inputs, same token; at most 64 characters.
pub fn client_token(execution: &str, step: &str, region: &str) -> String {
    let token = format!("amip-{}-{}", step, short_hash(&[execution, step, region], 40));
    token.chars().take(MAX_CLIENT_TOKEN).collect()
}

/// Eight characters unique to an execution, for `{{id}}` in image names.
pub fn execution_short_id(execution: &str) -> String {
    short_hash(&[execution], 8)
}

fn is_ami_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "()[]./-'@_ ".contains(c)
}

/// Makes any string a valid AMI name: allowed characters only (others become `-`), 3-128 characters.
pub fn sanitize_ami_name(raw: &str) -> String {
    let mut s: String = raw.chars().map(|c| if is_ami_name_char(c) { c } else { '-' }).collect();
    s = s.trim().to_string();
    if s.len() > MAX_AMI_NAME {
        s.truncate(MAX_AMI_NAME); // ASCII only by now, so this cuts on a character boundary
        s = s.trim_end().to_string();
    }
    while s.len() < MIN_AMI_NAME {
        s.push('-');
    }
    s
}

/// Values the image name template can use.
pub struct NameValues<'a> {
    pub pipeline: &'a str,
    pub version: &'a str,
    pub date: &'a str,
    pub execution: &'a str,
}

const NAME_PLACEHOLDERS: &[&str] = &["pipeline", "version", "date", "id"];

pub fn check_name_template(field: &str, t: &str) -> Result<()> {
    if t.is_empty() || t.len() > 256 {
        return Err(Error::invalid(field, "must be 1-256 characters"));
    }
    let mut rest = t;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            return Err(Error::invalid(field, "has `{{` without `}}`"));
        };
        let key = &rest[start + 2..start + end];
        if !NAME_PLACEHOLDERS.contains(&key) {
            return Err(Error::invalid(
                field,
                format!(
                    "unknown placeholder `{{{{{}}}}}`; use {}",
                    preview(key),
                    NAME_PLACEHOLDERS.join(", ")
                ),
            ));
        }
        rest = &rest[start + end + 2..];
    }
    Ok(())
}

/// Renders the recipe's image name template and sanitizes the result.
pub fn render_image_name(template: &str, v: &NameValues<'_>) -> String {
    let raw = template
        .replace("{{pipeline}}", v.pipeline)
        .replace("{{version}}", v.version)
        .replace("{{date}}", v.date)
        .replace("{{id}}", &execution_short_id(v.execution));
    sanitize_ami_name(&raw)
}

/// Pipeline names: 1-40 of lowercase letters, digits and `-`, starting with a letter.
pub fn check_pipeline_name(field: &str, name: &str) -> Result<()> {
    let ok = (1..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1-40 lowercase letters, digits or `-`, starting with a letter",
        ))
    }
}

/// Release versions go into scripts, names and tags, so only a safe set is allowed: 1-64 of letters, digits
/// and `. _ + -`, starting with a letter or digit. Nothing here can break out of a shell or PowerShell string.
pub fn check_version(field: &str, v: &str) -> Result<()> {
    let ok = (1..=64).contains(&v.len())
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.chars().all(|c| c.is_ascii_alphanumeric() || "._+-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be 1-64 letters, digits or `. _ + -`, starting with a letter or digit",
        ))
    }
}

/// A git commit: 7-40 hex digits.
pub fn check_commit(field: &str, c: &str) -> Result<()> {
    if (7..=40).contains(&c.len()) && c.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Error::invalid(field, "must be a git commit id, 7-40 hex digits"))
    }
}

/// An artifact location (s3://, https://, or a package name). Only URL-safe characters that have no meaning to
/// a shell or PowerShell inside single quotes: no quotes, `$`, backticks, `;`, `&`, `|`, spaces or newlines.
pub fn check_artifact(field: &str, a: &str) -> Result<()> {
    let ok = (1..=1024).contains(&a.len())
        && a.starts_with(|c: char| c.is_ascii_alphanumeric())
        && a.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._~:/?#[]@!*+,=%".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            field,
            "must be a URL or name of at most 1024 characters from A-Z a-z 0-9 - . _ ~ : / ? # [ ] @ ! * + , = %",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn execution_names_are_deterministic_and_valid() {
        let a = release_execution_name("web", "1.2.3");
        assert_eq!(a, release_execution_name("web", "1.2.3"));
        // `.` is not allowed: cleaned, so a hash suffix keeps 1.2.3 apart from 1-2-3
        assert!(a.starts_with("web-r-1-2-3-"), "{a}");
        assert_ne!(a, release_execution_name("web", "1-2-3"));
        assert_eq!(release_execution_name("web", "v12"), "web-r-v12");
        let long = release_execution_name(&"p".repeat(40), &"9".repeat(64));
        assert_eq!(long.len(), MAX_EXECUTION_NAME);
        assert_eq!(scheduled_execution_name("web", "20261126"), "web-s-20261126");
    }

    #[test]
    fn ami_names_are_always_valid() {
        for raw in ["", "a", "web:1.0/ü", &"x".repeat(500), "  spaced  "] {
            let n = sanitize_ami_name(raw);
            assert!((MIN_AMI_NAME..=MAX_AMI_NAME).contains(&n.len()), "{raw:?} -> {n:?}");
            assert!(n.chars().all(is_ami_name_char), "{n}");
        }
    }

    #[test]
    fn image_name_template_renders_and_rejects_unknown_placeholders() {
        let v = NameValues {
            pipeline: "web",
            version: "1.0+b",
            date: "20261126",
            execution: "web-r-1",
        };
        let n = render_image_name("{{pipeline}}-{{version}}-{{date}}-{{id}}", &v);
        assert_eq!(n, format!("web-1.0-b-20261126-{}", execution_short_id("web-r-1")));
        let err = check_name_template("recipe.image.name", "{{pipeline}}-{{secret}}").unwrap_err();
        assert!(err.to_string().contains("recipe.image.name") && err.to_string().contains("secret"));
        assert!(check_name_template("f", "{{pipeline").is_err());
    }

    #[test]
    fn client_tokens_fit_and_differ_per_region() {
        let a = client_token("web-r-1", "copy", "eu-west-1");
        assert!(a.len() <= MAX_CLIENT_TOKEN);
        assert_eq!(a, client_token("web-r-1", "copy", "eu-west-1"));
        assert_ne!(a, client_token("web-r-1", "copy", "eu-west-2"));
        assert_ne!(a, client_token("web-r-2", "copy", "eu-west-1"));
    }

    #[test]
    fn release_values_cannot_break_out_of_a_script() {
        for bad in ["1.0'; rm -rf /", "$(id)", "1.0\n", "`x`", "", "-rf", "a b"] {
            assert!(check_version("detail.version", bad).is_err(), "{bad:?}");
        }
        assert!(check_version("v", "1.2.3-rc.1+build.7").is_ok());
        for bad in ["s3://b/k'x", "https://x/$(id)", "a;b", "a b", "a|b", "a&b", "\"q\""] {
            assert!(check_artifact("detail.artifact", bad).is_err(), "{bad:?}");
        }
        assert!(check_artifact("a", "s3://bucket/app-1.2.3.tar.gz").is_ok());
        assert!(check_commit("c", "0123abc").is_ok());
        assert!(check_commit("c", "xyz1234").is_err());
    }
}
