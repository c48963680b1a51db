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
    let mut command = Cli::command();
    clap_complete::generate(args.shell, &mut command, "mhr", out);
    Ok(Outcome::Success)
}

/// mhr(8) in roff, with a section per command.
pub fn manpage(out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let command = Cli::command();
    let page = clap_mangen::Man::new(command.clone()).section("8");
    page.render(out)?;
    for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
        writeln!(out, ".SH \"MHR {}\"", sub.get_name().to_uppercase())?;
        let page = clap_mangen::Man::new(sub.clone());
        page.render_description_section(out)?;
        page.render_options_section(out)?;
    }
    Ok(Outcome::Success)
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
    }
}
