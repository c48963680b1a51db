//! A hook inherits the daemon's seccomp filter across execve: a shell
//! script with a pipe, a command substitution, a background job, `sleep`
//! and a process group of its own still runs under it.

use std::os::unix::process::CommandExt as _;

use super::{Unlisted, filter};

#[test]
fn a_shell_hook_runs_under_the_filter() {
    let output = std::thread::spawn(|| {
        seccompiler::apply_filter(&filter(Unlisted::Deny).unwrap()).unwrap();
        std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg("x=$(echo hi | cat); echo \"$x\"; (sleep 0.1; echo bg) & wait; ls / >/dev/null && echo done")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(std::process::Stdio::null())
            .process_group(0)
            .output()
    })
    .join()
    .expect("the filtered thread survives")
    .expect("the hook starts under the filter");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout, "hi\nbg\ndone\n", "stderr: {}", String::from_utf8_lossy(&output.stderr));
}
