//! The binary's final error, as whoever reads its output sees it: one
//! `mhr: …` line by default, one JSON line like every other log line under
//! `--log-format json`. Needs no root: the config is refused before mhr
//! looks at the host.

use std::process::{Command, Output};

fn plan_with_a_bad_config(log_format: &str) -> Output {
    let dir = std::env::temp_dir().join(format!("mhr-cli-errors-{log_format}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("mhr.toml");
    std::fs::write(&config, "[[uplink]]\ninterface = \"ens3\"\nprimary = true\nweight = 0\n").unwrap();
    let run = Command::new(env!("CARGO_BIN_EXE_mhr"))
        .args(["--log-format", log_format, "--config"])
        .arg(&config)
        .arg("plan")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    run
}

#[test]
fn under_log_format_json_the_final_error_is_one_json_line_like_the_others() {
    let run = plan_with_a_bad_config("json");
    assert_eq!(run.status.code(), Some(2), "a config error exits 2");
    let stderr = String::from_utf8_lossy(&run.stderr);
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|err| panic!("not JSON ({err}): {line}")))
        .collect();
    let last = lines.last().expect("the error is logged");
    assert_eq!(last["level"], "ERROR", "{stderr}");
    assert_eq!(last["fields"]["message"], "mhr failed", "{stderr}");
    let error = last["fields"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("mhr.toml:4:") && error.contains("weight"), "{error}");
    assert!(run.stdout.is_empty(), "nothing on stdout");
}

#[test]
fn in_text_the_final_error_is_one_line_naming_file_line_and_key() {
    let run = plan_with_a_bad_config("text");
    assert_eq!(run.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.starts_with("mhr: "), "{stderr}");
    assert!(stderr.contains("mhr.toml:4:") && stderr.contains("weight"), "{stderr}");
}
