//! `mhr completions SHELL` and `mhr manpage`: generated from the same
//! clap definitions as the commands, so they never go stale.

use std::io::Write;

use clap::CommandFactory as _;

use super::{Cli, Outcome};

#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub fn completions(args: &CompletionsArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let full = Cli::command();
    // The generators list hidden subcommands too (the rollback guardian):
    // complete only what people type.
    let visible: Vec<clap::Command> =
        full.get_subcommands().filter(|sub| !sub.is_hide_set()).cloned().collect();
    let mut command = clap::Command::new("mhr").args(full.get_arguments().cloned()).subcommands(visible);
    clap_complete::generate(args.shell, &mut command, "mhr", out);
    Ok(Outcome::Success)
}

/// The sections clap does not write: exit status, files, environment.
const MAN_TAIL: &str = r#".SH "EXIT STATUS"
.TP
0
Success.
.TP
1
\fBcheck\fR (or \fBstatus \-\-check\fR) found something wrong, or \fBdown\fR left work for a later \fBdown\fR (an uplink that is gone).
.TP
2
An error: bad input, a refused plan, a failed kernel change (undone). Bad input changes nothing.
.SH ENVIRONMENT
.TP
\fBMHR_LOG\fR
The log filter when \fB\-\-log\-level\fR is not given (a level such as \fBinfo\fR, or \fBwarn,mhr_userspace::daemon=debug\fR).
.TP
\fBMHR_HOST_ROOT\fR
Read the host's network manager files and processes under this root instead of / (a container with the host's / mounted elsewhere).
.TP
\fBJOURNAL_STREAM\fR
Set by systemd: log lines carry a syslog priority and no timestamp of their own.
.TP
\fBNO_COLOR\fR
No colours in log lines.
.SH FILES
.TP
\fB/etc/mhr/mhr.toml\fR
The configuration (\fBmhr init \-\-write\fR writes one).
.TP
\fB/var/lib/mhr/\fR
State: remembered gateways, the daemon's health view (health.json, health\-last.json), a pending confirmation, its guardian's lock and its rollback record, the lock.
.TP
\fB/etc/iproute2/rt_tables.d/mhr.conf\fR
The names of mhr's routing tables.
.TP
\fB/sys/fs/bpf/mhr/\fR
The source guard's pinned maps and links.
.SH "SEE ALSO"
\fBip\-rule\fR(8), \fBip\-route\fR(8), \fBtc\fR(8)
"#;

/// mhr(8) in roff, with a section per command.
pub fn manpage(out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let command = Cli::command();
    let page = clap_mangen::Man::new(command.clone()).section("8");
    // Every section but clap_mangen's SUBCOMMANDS, which names a page per
    // command (mhr-apply(8), …) that is not shipped: the commands are
    // listed here and described in sections of this page.
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    writeln!(out, ".SH COMMANDS")?;
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set() && sub.get_name() != "help") {
        let about = sub.get_about().map(|about| about.to_string()).unwrap_or_default();
        writeln!(out, ".TP\n\\fBmhr {}\\fR\n{}", sub.get_name(), roff_escape(&about))?;
    }
    page.render_version_section(out)?;
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set() && sub.get_name() != "help") {
        writeln!(out, ".SH \"MHR {}\"", sub.get_name().to_uppercase())?;
        let page = clap_mangen::Man::new(sub.clone());
        page.render_description_section(out)?;
        page.render_options_section(out)?;
    }
    out.write_all(MAN_TAIL.as_bytes())?;
    Ok(Outcome::Success)
}

/// Text as roff shows it literally: backslashes and hyphens escaped, no
/// line starting with a control character.
fn roff_escape(text: &str) -> String {
    let escaped = text.replace('\\', "\\e").replace('-', "\\-");
    match escaped.chars().next() {
        Some('.' | '\'') => format!("\\&{escaped}"),
        _ => escaped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_know_every_visible_command() {
        let mut bash = Vec::new();
        completions(&CompletionsArgs { shell: clap_complete::Shell::Bash }, &mut bash).unwrap();
        let bash = String::from_utf8(bash).unwrap();
        for command in ["apply", "confirm", "down", "init", "status", "check", "run", "watch", "monitor"] {
            assert!(bash.contains(command), "{command} missing from the bash completions");
        }
        assert!(bash.contains("--confirm") && bash.contains("--connections"));
        assert!(!bash.contains("guardian"), "the hidden guardian is not completed");
    }

    #[test]
    fn the_man_page_has_a_section_per_command() {
        let mut roff = Vec::new();
        manpage(&mut roff).unwrap();
        let roff = String::from_utf8(roff).unwrap();
        assert!(roff.starts_with(".ie") || roff.contains(".TH mhr 8"), "{roff}");
        for section in ["MHR APPLY", "MHR CONFIRM", "MHR INIT", "MHR RUN"] {
            assert!(roff.contains(section), "{section} missing");
        }
        assert!(roff.contains("confirm"), "apply's --confirm documented");
        assert!(!roff.contains("GUARDIAN"));
        // Only mhr(8) is shipped: no page per command is named.
        for sub in Cli::command().get_subcommands() {
            let page = format!("mhr\\-{}(8)", sub.get_name());
            assert!(!roff.contains(&page), "{page} is named but not shipped");
        }
        assert!(!roff.contains("SUBCOMMANDS"), "{roff}");
        assert!(roff.contains(".SH COMMANDS") && roff.contains("\\fBmhr apply\\fR"), "{roff}");
        for section in [".SH \"EXIT STATUS\"", ".SH ENVIRONMENT", ".SH FILES", ".SH \"SEE ALSO\""] {
            assert!(roff.contains(section), "{section} missing");
        }
    }
}
