//! The command line: `validate` with positioned errors, `schema`, `--help`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn concierge(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_concierge"))
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("CONCIERGE_LOG")
        .output()
        .expect("run concierge")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).expect("utf-8 output")
}

/// Writes `yaml` to a file named `name` in `dir`.
fn write(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write config");
    path
}

/// Runs `validate` on a bad file and returns its error lines, checking the
/// exit code and the closing count line.
fn validate_errors(path: &Path) -> Vec<String> {
    let out = concierge(&["validate", path.to_str().unwrap()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(text(&out.stdout), "", "nothing on stdout for a bad file");
    let mut lines: Vec<String> = stderr.lines().map(str::to_string).collect();
    let count = lines.pop().expect("a count line");
    assert_eq!(count, format!("{} error(s)", lines.len()), "{stderr}");
    lines
}

/// Asserts `line` is exactly `file:line:column: ` followed by a message
/// containing `message`.
fn assert_error(line: &str, path: &Path, at: (u32, u32), message: &str) {
    let prefix = format!("{}:{}:{}: ", path.display(), at.0, at.1);
    let rest = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("expected `{prefix}...`, got `{line}`"));
    assert!(rest.contains(message), "expected `{message}` in `{rest}`");
    // The position is printed once, by us.
    assert!(!rest.contains("line "), "position repeated in `{rest}`");
}

const GOOD: &str = r#"
frontends:
  - name: web
    listen: 127.0.0.1:8080
    routes:
      - match: { path_prefix: /api }
        service: api
      - match: { methods: [GET], path: "/items/{id}" }
        rewrite: { path: "/v1/items/{id}" }
        service: api
services:
  api:
    targets: ["127.0.0.1:9000"]
"#;

#[test]
fn validate_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "good.yaml", GOOD);
    let out = concierge(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim_end(),
        format!("{}: ok (1 frontends, 2 routes, 1 services)", path.display())
    );
}

#[test]
fn validate_pins_each_error_to_its_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    // Each case: the file, where the error must point and what it says.
    let cases: [(&str, &str, (u32, u32), &str); 6] = [
        (
            "unknown-field.yaml",
            // `routez` is a typo of `routes`: line 4, column 5.
            "frontends:\n  - name: web\n    listen: 127.0.0.1:8080\n    routez: []\n",
            (4, 5),
            "unknown field `routez`",
        ),
        (
            "wrong-type.yaml",
            // The value `lots` on line 7 starts at column 26.
            "frontends:\n  - name: web\n    listen: 127.0.0.1:8080\nservices:\n  api:\n    targets: [\"127.0.0.1:9000\"]\n    max_idle_per_target: lots\n",
            (7, 26),
            "invalid u64",
        ),
        (
            "wrong-type-bool.yaml",
            // `maybe` on line 7 starts at column 24.
            "frontends:\n  - name: web\n    listen: 127.0.0.1:8080\n    routes:\n      - match: { path: /x }\n        service: api\n        preserve_host: maybe\nservices:\n  api: { targets: [\"127.0.0.1:9000\"] }\n",
            (7, 24),
            "invalid boolean",
        ),
        (
            "missing-service.yaml",
            // `nope` on line 6 starts at column 18.
            "frontends:\n  - name: web\n    listen: 127.0.0.1:8080\n    routes:\n      - match: { path: /x }\n        service: nope\nservices:\n  api: { targets: [\"127.0.0.1:9000\"] }\n",
            (6, 18),
            "route names service `nope`, which does not exist (services: api)",
        ),
        (
            "duplicate-listen.yaml",
            // The second `127.0.0.1:8080`, line 5 column 13.
            "frontends:\n  - name: web\n    listen: 127.0.0.1:8080\n  - name: mobile\n    listen: 127.0.0.1:8080\n",
            (5, 13),
            "duplicate listener: 127.0.0.1:8080 is already used by frontend `web`",
        ),
        (
            "bad-address.yaml",
            // `localhost-8080` on line 3 starts at column 13.
            "frontends:\n  - name: web\n    listen: localhost-8080\n",
            (3, 13),
            "`localhost-8080` is not a socket address",
        ),
    ];
    for (name, yaml, at, message) in cases {
        let path = write(dir.path(), name, yaml);
        let lines = validate_errors(&path);
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert_error(&lines[0], &path, at, message);
    }
}

#[test]
fn validate_reports_every_semantic_error_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "several.yaml",
        r#"frontends:
  - name: web
    listen: 127.0.0.1:8080
    routes:
      - match: { path_prefix: /api }
        service: ghost
      - match: { path_prefix: /shop, methods: [get] }
        service: api
  - name: mobile
    listen: 127.0.0.1:8080
services:
  api:
    targets: ["127.0.0.1:9000"]
"#,
    );
    let lines = validate_errors(&path);
    assert_eq!(lines.len(), 3, "{lines:#?}");
    assert_error(
        &lines[0],
        &path,
        (6, 18),
        "route names service `ghost`, which does not exist",
    );
    assert_error(&lines[1], &path, (7, 48), "`get` is not an HTTP method");
    assert_error(
        &lines[2],
        &path,
        (10, 13),
        "duplicate listener: 127.0.0.1:8080",
    );
}

#[test]
fn validate_accepts_the_zimmart_example() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/zimmart.yaml");
    let out = concierge(&["validate", example.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains(": ok (3 frontends,"), "{stdout}");
}

#[test]
fn validate_of_a_missing_file_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.yaml");
    let lines = validate_errors(&path);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("{}:", path.display())),
        "{lines:?}"
    );
    assert!(lines[0].contains("cannot read the file"), "{lines:?}");
}

#[test]
fn schema_is_json_schema_for_the_config() {
    let out = concierge(&["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).expect("schema is JSON");
    assert!(schema.get("$schema").is_some(), "{schema}");
    assert!(schema["properties"].get("frontends").is_some(), "{schema}");
    assert!(text(&out.stdout).contains("\"frontends\""));
}

#[test]
fn help_lists_the_subcommands() {
    let out = concierge(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for command in ["run", "validate", "schema", "demo"] {
        assert!(
            commands.contains(&command),
            "{command} missing from:\n{help}"
        );
    }
}

#[test]
fn validate_refuses_duplicate_issuers_naming_both_providers() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "duplicate-issuer.yaml",
        r#"identity_providers:
  primary:
    issuer: https://idp.test
    audiences: [shop-api]
    keys: { hs_secret: "0123456789abcdef0123456789abcdef" }
    algorithms: [HS256]
  secondary:
    issuer: https://idp.test
    audiences: [other-api]
    keys: { hs_secret: "fedcba9876543210fedcba9876543210" }
    algorithms: [HS256]
  tertiary:
    issuer: https://other.test
    audiences: [shop-api]
    keys: { hs_secret: "fedcba9876543210fedcba9876543210" }
    algorithms: [HS256]
frontends:
  - name: web
    listen: 127.0.0.1:8080
"#,
    );
    let lines = validate_errors(&path);
    assert_eq!(lines.len(), 1, "{lines:#?}");
    // The second provider (its settings start on line 8, column 5).
    assert_error(
        &lines[0],
        &path,
        (8, 5),
        "identity provider `secondary` has the same issuer as `primary`: `https://idp.test`",
    );
}

#[test]
fn validate_refuses_a_provider_without_audiences() {
    let dir = tempfile::tempdir().unwrap();
    for (name, audiences) in [
        ("no-audiences.yaml", "[]"),
        ("blank-audience.yaml", "[\"\"]"),
    ] {
        let path = write(
            dir.path(),
            name,
            &format!(
                r#"identity_providers:
  idp:
    issuer: https://idp.test
    audiences: {audiences}
    keys: {{ hs_secret: "0123456789abcdef0123456789abcdef" }}
    algorithms: [HS256]
frontends:
  - name: web
    listen: 127.0.0.1:8080
"#
            ),
        );
        let lines = validate_errors(&path);
        assert_eq!(lines.len(), 1, "{name}: {lines:#?}");
        assert_error(
            &lines[0],
            &path,
            (3, 5),
            "identity provider `idp`: list at least one audience",
        );
    }
    // The same provider with an audience is fine.
    let path = write(
        dir.path(),
        "one-audience.yaml",
        r#"identity_providers:
  idp:
    issuer: https://idp.test
    audiences: [shop-api]
    keys: { hs_secret: "0123456789abcdef0123456789abcdef" }
    algorithms: [HS256]
frontends:
  - name: web
    listen: 127.0.0.1:8080
"#,
    );
    let out = concierge(&["validate", path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}
