//! `hush-conformance vectors` end to end: the real binary against hush's
//! own `serve`, against changed vectors, and against small fake
//! implementations that answer wrongly, garbage, exit or hang.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_hush-conformance");

fn published() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../spec/vectors")
}

/// A fresh, empty directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

fn scratch(test: &str) -> Scratch {
    let dir = std::env::temp_dir().join(format!("hush-conformance-{}-{test}", std::process::id()));
    std::fs::remove_dir_all(&dir).ok();
    std::fs::create_dir_all(&dir).unwrap();
    Scratch(dir)
}

/// Copies the published vector files named (all if `None`) into `dir`.
fn copy_vectors(dir: &Path, only: Option<&[&str]>) {
    for entry in std::fs::read_dir(published()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name.ends_with(".json") && only.is_none_or(|o| o.contains(&name.as_str())) {
            std::fs::copy(&path, dir.join(&name)).unwrap();
        }
    }
}

/// `mechanism/name` of every vector in `dir`, in the checker's order.
fn labels(dir: &Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let doc: Value = serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        for vector in doc["vectors"].as_array().unwrap() {
            out.push(format!(
                "{}/{}",
                doc["mechanism"].as_str().unwrap(),
                vector["name"].as_str().unwrap()
            ));
        }
    }
    out
}

/// Edits one vector file in place.
fn edit(path: &Path, change: impl FnOnce(&mut Value)) {
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    change(&mut doc);
    std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap()).unwrap();
}

struct Run {
    success: bool,
    lines: Vec<String>,
    stderr: String,
}

impl Run {
    fn starting(&self, prefix: &str) -> Vec<&str> {
        self.lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .map(String::as_str)
            .collect()
    }

    fn summary(&self) -> &str {
        self.lines.last().map_or("", String::as_str)
    }
}

fn run_in(cwd: &Path, args: &[&str]) -> Run {
    let out = Command::new(BIN)
        .arg("vectors")
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap();
    Run {
        success: out.status.success(),
        lines: String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs the checker on `dir` against a shell script.
fn against_script(dir: &Path, script: &str, extra: &[&str]) -> Run {
    let path = dir.join("impl.sh");
    std::fs::write(&path, script).unwrap();
    let dir_arg = dir.to_str().unwrap();
    let mut args = vec!["--dir", dir_arg];
    args.extend(extra);
    args.extend(["--impl", "sh", path.to_str().unwrap()]);
    run_in(dir, &args)
}

/// A script answering every request with `answer`, where `$id` is the
/// request's id.
fn answering(answer: &str) -> String {
    format!(
        "while IFS= read -r line; do id=${{line#\\{{\\\"id\\\":}}; id=${{id%%,*}}; printf '%s\\n' \"{answer}\"; done\n"
    )
}

#[test]
fn hush_passes_every_published_vector() {
    // Run from a directory without spec/vectors: the checker falls back
    // to the source tree's, and runs its own `serve`.
    let cwd = scratch("self");
    let run = run_in(&cwd, &[]);
    let expected = labels(&published());
    assert!(run.success, "{:?}\n{}", run.lines, run.stderr);
    let passed: Vec<String> = run
        .starting("pass ")
        .iter()
        .map(|l| l[5..].to_string())
        .collect();
    assert_eq!(passed, expected);
    assert_eq!(
        run.summary(),
        format!(
            "{n} vectors: {n} passed, 0 failed, 0 skipped",
            n = expected.len()
        )
    );
    assert!(expected.iter().any(|l| l.starts_with("decoding/")));
}

#[test]
fn a_changed_recorded_output_fails_that_vector_only() {
    let dir = scratch("changed");
    copy_vectors(&dir, None);
    edit(&dir.join("x3dh.json"), |doc| {
        let sk = &mut doc["vectors"][0]["sk"];
        let old = sk.as_str().unwrap();
        let first = if old.starts_with('0') { "1" } else { "0" };
        *sk = json!(format!("{first}{}", &old[1..]));
    });
    edit(&dir.join("sender-keys.json"), |doc| {
        doc["vectors"][0]["receiver_steps"][3]["result"] = json!({"error": "BadSignature"});
    });
    let run = run_in(&dir, &["--dir", dir.to_str().unwrap()]);
    assert!(!run.success);
    assert_eq!(
        run.starting("FAIL "),
        [
            "FAIL sender-keys/group: fields differ: receiver_steps[3].result.error",
            "FAIL x3dh/one_time_prekey: fields differ: sk",
        ]
    );
    let total = labels(&dir).len();
    assert_eq!(
        run.summary(),
        format!("{total} vectors: {} passed, 2 failed, 0 skipped", total - 2)
    );
}

#[test]
fn vectors_the_checker_cannot_split_fail() {
    let dir = scratch("unsplittable");
    copy_vectors(&dir, Some(&["identity.json"]));
    edit(&dir.join("identity.json"), |doc| {
        doc["vectors"][0]["surprise"] = json!(1);
        doc["vectors"][1]["name"] = json!("identity_9");
    });
    std::fs::write(dir.join("broken.json"), "{ not json").unwrap();
    std::fs::write(
        dir.join("teleport.json"),
        r#"{"mechanism": "teleport", "vectors": [{"name": "beam", "draws": []}]}"#,
    )
    .unwrap();
    let run = run_in(&dir, &["--dir", dir.to_str().unwrap()]);
    assert!(!run.success);
    let fails = run.starting("FAIL ");
    assert_eq!(fails.len(), 4, "{fails:?}");
    assert!(fails[0].starts_with("FAIL broken.json: not JSON"));
    assert_eq!(fails[1], "FAIL identity/identity_1: unknown field surprise");
    assert!(fails[2].starts_with("FAIL identity/identity_9: the checker does not know"));
    assert!(fails[3].starts_with("FAIL teleport/beam: the checker does not know"));
    assert_eq!(run.starting("pass "), ["pass identity/address_errors"]);
}

#[test]
fn wrong_answers_fail_every_vector() {
    let dir = scratch("wrong");
    copy_vectors(&dir, None);
    let run = against_script(&dir, &answering(r#"{\"id\":$id,\"outputs\":{}}"#), &[]);
    assert!(!run.success);
    let fails = run.starting("FAIL ");
    assert_eq!(fails.len(), labels(&dir).len(), "{:?}", run.lines);
    assert!(
        fails
            .iter()
            .all(|l| l.contains(": fields differ: ") && l.contains("(missing)"))
    );
    assert!(
        fails.contains(&"FAIL safety-numbers/pair_1: fields differ: digits (missing), scannable_local (missing), scannable_remote (missing)")
    );
}

#[test]
fn broken_implementations_are_reported_and_restarted() {
    let dir = scratch("broken");
    copy_vectors(&dir, Some(&["safety-numbers.json"]));
    let cases = [
        (
            "echo garbage",
            answering("garbage"),
            "the answer is not JSON",
        ),
        (
            "wrong id",
            answering(r#"{\"id\":0,\"outputs\":{}}"#),
            "the answer has id 0, the request ",
        ),
        (
            "error",
            answering(r#"{\"id\":$id,\"error\":\"not built yet\"}"#),
            "the implementation reported an error: not built yet",
        ),
        (
            "exits",
            "read -r line; exit 3\n".to_string(),
            "the implementation exited (exit status: 3) without answering",
        ),
    ];
    for (what, script, expected) in cases {
        let run = against_script(&dir, &script, &[]);
        assert!(!run.success, "{what}");
        let fails = run.starting("FAIL ");
        assert_eq!(fails.len(), 2, "{what}: {:?}", run.lines);
        assert!(
            fails.iter().all(|l| l.contains(expected)),
            "{what}: {fails:?}"
        );
    }
}

#[test]
fn unsupported_vectors_are_skipped() {
    let dir = scratch("unsupported");
    copy_vectors(&dir, Some(&["safety-numbers.json"]));
    let run = against_script(
        &dir,
        &answering(r#"{\"id\":$id,\"unsupported\":true}"#),
        &[],
    );
    assert!(run.success, "{:?}", run.lines);
    assert_eq!(
        run.starting("skip "),
        [
            "skip safety-numbers/pair_1 (unsupported by the implementation)",
            "skip safety-numbers/pair_2 (unsupported by the implementation)",
        ]
    );
    assert_eq!(run.summary(), "2 vectors: 0 passed, 0 failed, 2 skipped");
}

#[test]
fn a_hanging_implementation_times_out() {
    let dir = scratch("hang");
    copy_vectors(&dir, Some(&["safety-numbers.json"]));
    let started = Instant::now();
    let run = against_script(&dir, "exec sleep 60\n", &["--timeout", "0.5"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(!run.success);
    assert_eq!(
        run.starting("FAIL "),
        [
            "FAIL safety-numbers/pair_1: no answer within 0.5 s (timeout)",
            "FAIL safety-numbers/pair_2: no answer within 0.5 s (timeout)",
        ]
    );
}

#[test]
fn bad_command_lines_are_refused() {
    let cwd = scratch("usage");
    for args in [
        &["--impl"][..],
        &["--timeout", "-1"],
        &["--timeout", "0"],
        &["--dir"],
        &["--bogus"],
    ] {
        let run = run_in(&cwd, args);
        assert!(!run.success, "{args:?}");
        assert!(run.lines.is_empty(), "{args:?}");
    }
    let run = run_in(&cwd, &["--impl", "/nonexistent/hush-impl"]);
    assert!(!run.success);
    assert!(
        run.stderr.contains("starting the implementation"),
        "{}",
        run.stderr
    );
}

#[test]
fn serve_answers_malformed_requests_and_carries_on() {
    let mut child = Command::new(BIN)
        .arg("serve")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    writeln!(stdin, "this is not a request").unwrap();
    writeln!(
        stdin,
        r#"{{"id": 7, "mechanism": "teleport", "kind": "beam", "vector": {{}}}}"#
    )
    .unwrap();
    writeln!(
        stdin,
        r#"{{"id": 8, "mechanism": "primitives", "kind": "kdf_steps", "vector": {{"x25519": {{"secret_a": "00"}}}}}}"#
    )
    .unwrap();
    drop(stdin);
    let answers: Vec<Value> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
        .collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(answers.len(), 3);
    assert_eq!(answers[0]["id"], Value::Null);
    assert!(
        answers[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("the request is not JSON")
    );
    assert_eq!(answers[1], json!({"id": 7, "unsupported": true}));
    assert_eq!(
        answers[2],
        json!({"id": 8, "error": "`secret_a` is 1 bytes, expected 32"})
    );
}
