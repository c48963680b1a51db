//! `[[hook]]` in the config: what is accepted, and every refusal naming
//! the hook and the key.

use std::{os::unix::fs::PermissionsExt as _, path::Path, time::Duration};

use super::*;

const UPLINKS: &str = "[[uplink]]\ninterface = \"ens3\"\nprimary = true\n[[uplink]]\ninterface = \"ens4\"\n";

fn message(text: &str) -> String {
    match Config::parse(text, Path::new("mhr.toml")) {
        Err(err) => err.to_string(),
        Ok(_) => panic!("accepted: {text}"),
    }
}

fn executable(dir: &tempfile::TempDir, mode: u32) -> String {
    let path = dir.path().join(format!("hook-{mode:o}"));
    std::fs::write(&path, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

#[test]
fn a_hook_parses_with_its_defaults_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executable(&dir, 0o755);
    let text = format!(
        "{UPLINKS}[[hook]]\non = [\"down\", \"failover\"]\nexec = \"{exec}\"\n\
         [[hook]]\non = [\"up\", \"degraded\", \"drained\"]\nexec = \"{exec}\"\nargs = [\"-v\"]\ntimeout = \"1m\"\nuplink = [\"ens4\"]\n"
    );
    let config = Config::parse(&text, Path::new("mhr.toml")).unwrap();
    assert_eq!(config.hooks.len(), 2);
    assert_eq!(config.hooks[0].on, vec![HookEvent::Down, HookEvent::Failover]);
    assert_eq!(config.hooks[0].timeout(), DEFAULT_HOOK_TIMEOUT);
    assert!(config.hooks[0].wants(HookEvent::Down, "ens3"));
    assert!(!config.hooks[0].wants(HookEvent::Up, "ens3"));
    assert_eq!(config.hooks[1].timeout(), Duration::from_secs(60));
    assert_eq!(config.hooks[1].args, vec!["-v".to_owned()]);
    assert!(config.hooks[1].wants(HookEvent::Drained, "ens4"));
    assert!(!config.hooks[1].wants(HookEvent::Drained, "ens3"));
}

#[test]
fn every_bad_hook_is_refused_naming_the_hook_and_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let exec = executable(&dir, 0o755);
    let not_executable = executable(&dir, 0o644);
    let folder = dir.path().display().to_string();
    let with = |body: &str| message(&format!("{UPLINKS}[[hook]]\n{body}\n"));
    assert_eq!(
        with(&format!("on = [\"down\", \"dwn\"]\nexec = \"{exec}\"")),
        "mhr.toml:7:15: hook #1: on[1] = \"dwn\" is not one of \"down\", \"up\", \"degraded\", \"drained\", \"failover\""
    );
    assert_eq!(
        with(&format!("on = []\nexec = \"{exec}\"")),
        "mhr.toml:7:1: hook #1: on is missing or empty: name the events to run on, from down, up, degraded, drained, failover"
    );
    assert_eq!(
        with(&format!("on = \"down\"\nexec = \"{exec}\"")),
        "mhr.toml:7:6: hook #1: on must be a list of \"down\", \"up\", \"degraded\", \"drained\", \"failover\", not \"down\""
    );
    assert_eq!(
        with("on = [\"down\"]\nexec = \"notify.sh\""),
        "mhr.toml:8:1: hook #1: exec = \"notify.sh\" is not an absolute path (hooks run without a shell or PATH)"
    );
    assert_eq!(
        with("on = [\"down\"]"),
        "mhr.toml:6:3: hook #1: exec is missing: name the program to run, e.g. exec = \"/usr/local/bin/notify\""
    );
    let missing = with("on = [\"down\"]\nexec = \"/nonexistent/notify\"");
    assert!(
        missing.starts_with(
            "mhr.toml:8:1: hook #1: exec = \"/nonexistent/notify\" cannot be used: No such file"
        ),
        "{missing}"
    );
    assert_eq!(
        with(&format!("on = [\"down\"]\nexec = \"{not_executable}\"")),
        format!(
            "mhr.toml:8:1: hook #1: exec = \"{not_executable}\" is not executable (no x bit in its mode)"
        )
    );
    assert_eq!(
        with(&format!("on = [\"down\"]\nexec = \"{folder}\"")),
        format!("mhr.toml:8:1: hook #1: exec = \"{folder}\" is not a regular file")
    );
    assert_eq!(
        with(&format!("on = [\"down\"]\nexec = \"{exec}\"\ntimeout = \"500ms\"")),
        "mhr.toml:9:1: hook #1: timeout must be from 1s to 10m, not 500ms"
    );
    assert_eq!(
        with(&format!("on = [\"down\"]\nexec = \"{exec}\"\ntimeout = \"11m\"")),
        "mhr.toml:9:1: hook #1: timeout must be from 1s to 10m, not 11m"
    );
    assert_eq!(
        with(&format!("on = [\"down\"]\nexec = \"{exec}\"\nuplink = [\"ens9\"]")),
        "mhr.toml:9:1: hook #1: uplink names `ens9`, which is not a configured uplink (uplinks: ens3, ens4)"
    );
    assert_eq!(
        with(&format!("on = [\"down\"]\nexec = \"{exec}\"\nexce = 1")),
        "mhr.toml:9:1: hook #1: unknown key `exce`; did you mean `exec`?"
    );
    assert_eq!(
        message(&format!("{UPLINKS}hook = 1\n")),
        "mhr.toml:6:1: uplink `ens4`: unknown key `hook`; `hook` is a top-level key, and TOML puts every key after a [[uplink]] header into that table: move it above the first table"
    );
    assert_eq!(
        message(&format!("hook = 1\n{UPLINKS}")),
        "mhr.toml:1:1: hooks are a list of tables: write `[[hook]]` (two brackets) above each hook's keys"
    );
}
