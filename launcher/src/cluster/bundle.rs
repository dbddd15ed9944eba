//! Join bundles for bare-metal workers (mixed clusters): what an existing
//! machine needs to join, in `<state_dir>/<cluster>/bundles/<machine>/`:
//!
//! | file | what |
//! |---|---|
//! | `meta-data`, `network-config`, `user-data` | the machine's cloud-init documents, as a microVM worker's ([`super::cloudinit`]) |
//! | `apply.sh` | a POSIX sh script for a plain Debian/Ubuntu host: applies the static address, route and DNS with `ip`, checks that the control-plane endpoint answers, then (with cloud-init installed, without `--network-only`) seeds cloud-init and runs it |
//!
//! The bundle holds the bootstrap token: directory 0700, files 0600
//! (`apply.sh` 0700). It is written under a temporary name and swapped into
//! place whole. [`Bundle::command`] is the line to give the operator.

use std::fs;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::cloudinit::{self, IFACE_PLACEHOLDER};
use super::plan::{MachinePlan, NodePlan, Plan};
use super::secrets::{self, ClusterSecrets};
use super::spec::ClusterSpec;

/// The script's file name in a bundle.
pub const APPLY_SCRIPT: &str = "apply.sh";
/// Where [`Bundle::command`] copies the bundle to on the machine.
pub const REMOTE_DIR: &str = "/tmp/mercury-join";
/// The script, with a line the variables replace.
const APPLY_TEMPLATE: &str = include_str!("bundle_apply.sh");
const VARIABLES_LINE: &str = "# @MERCURY_VARIABLES@\n";

/// A written bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    /// `<state_dir>/<cluster>/bundles/<machine>`.
    pub dir: PathBuf,
    /// One shell line for the operator: copies the bundle to the machine
    /// over ssh (as root, to [`REMOTE_DIR`]) and runs `apply.sh` there.
    pub command: String,
}

/// The bundle directory of bare-metal machine `machine`.
pub fn bundle_dir(state_dir: &Path, cluster: &str, machine: &str) -> PathBuf {
    state_dir.join(cluster).join("bundles").join(machine)
}

/// Writes the join bundle of bare-metal node `node` of `plan` (replacing
/// an earlier one).
pub fn write_bundle(
    state_dir: &Path,
    spec: &ClusterSpec,
    plan: &Plan,
    node: &NodePlan,
    secrets: &ClusterSecrets,
) -> io::Result<Bundle> {
    if node.machine != MachinePlan::Baremetal {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "node {} is a microVM: join bundles are for bare-metal machines",
                node.name
            ),
        ));
    }
    let docs = cloudinit::node_documents(spec, plan, node, secrets)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    let endpoint = plan.endpoint.ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "the plan for cluster {} has no control-plane endpoint",
                plan.cluster
            ),
        )
    })?;
    let script = apply_script(spec, node, endpoint);
    let dir = bundle_dir(state_dir, &plan.cluster, &node.name);
    let parent = dir.parent().unwrap_or(state_dir);
    fs::create_dir_all(parent).map_err(|e| with_path(parent, e))?;
    let tmp = parent.join(format!(".{}.{}", node.name, super::state::temp_suffix()));
    let written = (|| {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&tmp)
            .map_err(|e| with_path(&tmp, e))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700))
            .map_err(|e| with_path(&tmp, e))?;
        for (name, text) in docs.files() {
            secrets::write_private(&tmp.join(name), text.as_bytes())?;
        }
        let apply = tmp.join(APPLY_SCRIPT);
        secrets::write_private(&apply, script.as_bytes())?;
        fs::set_permissions(&apply, fs::Permissions::from_mode(0o700))
            .map_err(|e| with_path(&apply, e))?;
        replace_dir(&tmp, &dir)
    })();
    if written.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    written?;
    Ok(Bundle {
        command: operator_command(&dir, node.ip),
        dir,
    })
}

/// Renames `tmp` to `dir`, moving an existing `dir` aside first and
/// removing it after.
fn replace_dir(tmp: &Path, dir: &Path) -> io::Result<()> {
    let old = tmp.with_file_name(format!(
        "{}.old",
        tmp.file_name().unwrap_or_default().to_string_lossy()
    ));
    let had_old = match fs::rename(dir, &old) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(with_path(dir, e)),
    };
    fs::rename(tmp, dir).map_err(|e| with_path(dir, e))?;
    if had_old {
        fs::remove_dir_all(&old).map_err(|e| with_path(&old, e))?;
    }
    Ok(())
}

/// `apply.sh` for `node`: the template with the node's values set.
pub fn apply_script(spec: &ClusterSpec, node: &NodePlan, endpoint: Ipv4Addr) -> String {
    let net = &spec.spec.network;
    let dns: Vec<String> = net.dns.iter().map(|d| d.to_string()).collect();
    let vars = [
        ("NODE", node.name.clone()),
        ("CLUSTER", spec.metadata.name.clone()),
        ("ADDRESS", format!("{}/{}", node.ip, net.cidr.prefix_len())),
        ("GATEWAY", net.gateway.to_string()),
        ("DNS", dns.join(" ")),
        ("MAC", node.mac.clone().unwrap_or_default().to_lowercase()),
        ("ENDPOINT", endpoint.to_string()),
        ("PLACEHOLDER", IFACE_PLACEHOLDER.to_string()),
    ];
    let mut block = format!(
        "# Written by mercury for node {} of cluster {}.\n",
        node.name, spec.metadata.name
    );
    for (name, value) in vars {
        block.push_str(&format!("{name}={}\n", sh_quote(&value)));
    }
    APPLY_TEMPLATE.replacen(VARIABLES_LINE, &block, 1)
}

/// The operator's line: one ssh connection copies the bundle (tar) and runs
/// it.
fn operator_command(dir: &Path, ip: Ipv4Addr) -> String {
    format!(
        "tar -C {} -cf - . | ssh root@{ip} 'rm -rf {REMOTE_DIR} && mkdir -m 700 {REMOTE_DIR} && tar -C {REMOTE_DIR} -xf - && sh {REMOTE_DIR}/{APPLY_SCRIPT}'",
        sh_quote(&dir.to_string_lossy())
    )
}

/// `value` as one shell word.
fn sh_quote(value: &str) -> String {
    let plain = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,".contains(&b));
    if plain {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', r"'\''"))
    }
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
#[path = "bundle_tests.rs"]
mod tests;
