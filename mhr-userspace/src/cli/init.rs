//! `mhr init`: print (or write) a config for the uplinks this host has.

use std::{io::Write, path::Path};

use anyhow::{Context as _, bail};

use super::Outcome;
use crate::init::{discover, render};

#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// Write the config to --config's path instead of printing it.
    #[arg(long)]
    write: bool,
    /// With --write: replace an existing file.
    #[arg(long, requires = "write")]
    force: bool,
}

pub fn run(config_path: &Path, args: &InitArgs, out: &mut dyn Write) -> anyhow::Result<Outcome> {
    let runtime = super::runtime()?;
    let observed = runtime.block_on(async {
        use crate::southbound::Southbound as _;
        let kernel = crate::netlink::Kernel::connect().context("opening a netlink socket")?;
        kernel.observe(None).await.context("reading the host's links, addresses and routes")
    })?;
    // A lease makes an interface an uplink even while it has no default
    // route (dhclient installs one default only).
    let leases = crate::leases::gateways(Path::new("/"), &observed.links, &Default::default());
    let found = discover(&observed, |name, _| leases.contains_key(name));
    if found.is_empty() {
        bail!(
            "no uplink found: no interface has both a global address and a default route (or a DHCP lease)"
        );
    }
    let neighbours = crate::neighbours::detect(&crate::neighbours::host_root());
    let mut text = render(&found, &neighbours);
    // What init writes must load: refuse rather than write a broken file.
    let config =
        crate::config::Config::parse(&text, config_path).context("the generated config does not validate")?;
    // The planner's own checks on what was found, as `mhr plan` will run
    // them: each refusal names the key that fixes it.
    let memory = crate::plan::Memory { leases, ..Default::default() };
    let mut judge = crate::health::judge::InstantJudge::default();
    let tolerant = crate::plan::Strictness::Tolerant;
    if let Ok(desired) = crate::plan::desired(&config, &observed, &memory, tolerant, &mut judge)
        && !desired.problems.is_empty()
    {
        text += "\n# `mhr plan` would refuse this until these are fixed:\n";
        for problem in &desired.problems {
            text += &format!("# - {problem}\n");
        }
    }
    if !args.write {
        write!(out, "{text}")?;
        return Ok(Outcome::Success);
    }
    if config_path.exists() && !args.force {
        bail!("{} exists; mhr init never overwrites it without --force", config_path.display());
    }
    let dir = config_path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut file = tempfile::Builder::new()
        .prefix(".mhr-init-")
        .tempfile_in(dir)
        .with_context(|| format!("writing in {}", dir.display()))?;
    file.write_all(text.as_bytes()).context("writing the config")?;
    file.persist(config_path).with_context(|| format!("writing {}", config_path.display()))?;
    let names: Vec<&str> = found.iter().map(|f| f.interface.as_str()).collect();
    writeln!(out, "wrote {} with {} uplink(s): {}", config_path.display(), found.len(), names.join(", "))?;
    writeln!(out, "next: `mhr plan` shows what `mhr apply` would change")?;
    Ok(Outcome::Success)
}
