//! `up`: make the host match a validated spec — the one convergence step
//! that `mercury cluster up` runs once and `reconcile --watch` runs on every
//! change.
//!
//! validate (the caller) → lock the cluster → read the state directory →
//! plan → check every new TAP name is free → bridge → control-plane nodes
//! (start, wait until ready) → workers (all started, then waited for
//! together) → deletes. Every node is recorded as soon as its process
//! starts, so a failure part-way leaves a state directory that names
//! everything made; the node that failed is removed again (its files and
//! the TAP made for it).
//!
//! Replacing a node stops it and makes it afresh from the image (new disk,
//! new seed): a changed size or image must not inherit the old disk. A node
//! replaced only because it crashed (its process is gone) is restarted from
//! its own disk and seed, as a rebooted machine would be: its etcd member
//! and kubelet state survive. A node whose directory was deleted by hand is
//! missing from the records and is created again, with the same name, IP
//! and MAC, because those are derived from the spec.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ipnet::Ipv4Net;

use super::bundle::{self, Bundle};
use super::cloudinit;
use super::disk;
use super::hostnet::{self, HostNet};
use super::node::{self, Started};
use super::nodes::Role;
use super::plan::{self, Action, MachinePlan, NodePlan, Plan};
use super::secrets::{self, ClusterSecrets};
use super::seed;
use super::spec::ClusterSpec;
use super::state::{self, BridgeRecord, ClusterDir, NodeKind, NodeRecord, StateError};

/// How `up` behaves.
#[derive(Debug, Clone)]
pub struct UpOptions {
    pub state_dir: PathBuf,
    /// How long to wait for each group of nodes to report ready.
    pub ready_timeout: Duration,
    /// How long a stopping node gets to power off before SIGTERM.
    pub stop_grace: Duration,
    /// How many times a node whose VMM exits before the node is ready is
    /// started again from its disk (as a supervisor's restart policy would)
    /// before `up` fails. Each restart is reported.
    pub boot_restarts: u32,
}

/// [`UpOptions::boot_restarts`] unless told otherwise.
pub const BOOT_RESTARTS: u32 = 1;

/// What went wrong, naming the node, file or interface.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Net(#[from] hostnet::HostNetError),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("node {node}: {what}: {source}")]
    Node {
        node: String,
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("node {node}: cannot write its cloud-init documents: {message}")]
    Documents { node: String, message: String },
    #[error(
        "TAP {tap} for node {node} already exists on this host and mercury did not create it; \
         remove it or rename the cluster"
    )]
    TapBusy { tap: String, node: String },
    #[error("node {node} exited before it was ready; the end of {log}:\n{tail}")]
    Exited {
        node: String,
        log: PathBuf,
        tail: String,
    },
    #[error(
        "{count} node(s) not ready after {secs} s: {nodes} (they keep running; see their \
         console.log, `mercury cluster status`)",
        count = nodes.len(), secs = timeout.as_secs(), nodes = nodes.join(", ")
    )]
    Timeout {
        nodes: Vec<String>,
        timeout: Duration,
    },
}

/// Where progress goes: a line per event, and the nodes still awaited.
pub trait Progress {
    fn event(&mut self, line: &str);
    /// The nodes not ready yet, with the seconds each has been starting.
    fn waiting(&mut self, _pending: &[(String, f64)]) {}
}

/// What `up` did.
#[derive(Debug)]
pub struct Outcome {
    /// The actions taken (every action but `keep`), as log lines.
    pub done: Vec<String>,
    /// The join bundles written for bare-metal machines.
    pub bundles: Vec<(String, Bundle)>,
}

/// Converges the host on `spec` (already validated).
pub fn up(
    spec: &ClusterSpec,
    opts: &UpOptions,
    progress: &mut dyn Progress,
) -> Result<Outcome, UpError> {
    let cluster = ClusterDir::new(&opts.state_dir, &spec.metadata.name);
    let _lock = cluster.lock()?;
    let mut records: BTreeMap<String, NodeRecord> = cluster
        .load_nodes()?
        .into_iter()
        .map(|r| (r.name.clone(), r))
        .collect();
    let observed = state::observed(&records.values().cloned().collect::<Vec<_>>());
    let plan = plan::plan(spec, &observed, &opts.state_dir)?;
    let net = HostNet::open()?;
    check_taps_free(&net, &plan, &records)?;
    // Every node's documents first: a name cloud-init would misread is
    // refused before anything is made.
    let secrets =
        secrets::load_or_create(&cluster.secrets_dir()).map_err(|source| UpError::Io {
            what: "cannot read or create the cluster secrets in",
            path: cluster.secrets_dir(),
            source,
        })?;
    ensure_bridge(&cluster, &net, spec)?;
    let mut step = Step {
        spec,
        plan: &plan,
        cluster: &cluster,
        net: &net,
        secrets: &secrets,
        opts,
        records: &mut records,
        done: Vec::new(),
        bundles: Vec::new(),
    };
    for role in [Role::ControlPlane, Role::Worker] {
        let mut started = Vec::new();
        for action in plan.actions.iter().filter(|a| action_role(a) == role) {
            if let Some(name) = step.apply(action, progress)? {
                started.push(name);
            }
        }
        // Nodes kept from an earlier run that never reported are awaited too.
        for action in plan.actions.iter().filter(|a| action_role(a) == role) {
            if let Action::Keep(n) = action {
                let r = &step.records[&n.name];
                if r.kind == NodeKind::Microvm && r.ready_after.is_none() {
                    started.push(n.name.clone());
                }
            }
        }
        step.wait_ready(&started, progress)?;
    }
    let Step { done, bundles, .. } = step;
    Ok(Outcome { done, bundles })
}

fn action_role(action: &Action) -> Role {
    match action {
        Action::Create(n) | Action::Keep(n) | Action::Replace { node: n, .. } => n.role,
        Action::Delete(d) => d.role,
    }
}

/// Refuses, before anything is made, a TAP that a new node needs and some
/// other program already has.
fn check_taps_free(
    net: &HostNet,
    plan: &Plan,
    records: &BTreeMap<String, NodeRecord>,
) -> Result<(), UpError> {
    for action in &plan.actions {
        let (Action::Create(n) | Action::Replace { node: n, .. }) = action else {
            continue;
        };
        let Some(tap) = n.tap() else { continue };
        let ours = records.get(&n.name).and_then(|r| r.tap.as_deref()) == Some(tap);
        if !ours && net.link(tap)?.is_some() {
            return Err(UpError::TapBusy {
                tap: tap.to_string(),
                node: n.name.clone(),
            });
        }
    }
    Ok(())
}

/// Makes the bridge (or finds it) and records what mercury added.
fn ensure_bridge(cluster: &ClusterDir, net: &HostNet, spec: &ClusterSpec) -> Result<(), UpError> {
    let network = &spec.spec.network;
    let address = Ipv4Net::new(network.gateway, network.cidr.prefix_len())
        .expect("a validated prefix length");
    let outcome = net.ensure_bridge(&network.bridge, address)?;
    let mut record = cluster.load_cluster()?;
    let bridge = record.bridge.get_or_insert(BridgeRecord {
        name: network.bridge.clone(),
        created: false,
        added_address: None,
    });
    bridge.created |= outcome.created_bridge;
    if outcome.added_address {
        bridge.added_address = Some(address);
    }
    cluster.save_cluster(&record)?;
    Ok(())
}

struct Step<'a> {
    spec: &'a ClusterSpec,
    plan: &'a Plan,
    cluster: &'a ClusterDir,
    net: &'a HostNet,
    secrets: &'a ClusterSecrets,
    opts: &'a UpOptions,
    records: &'a mut BTreeMap<String, NodeRecord>,
    done: Vec<String>,
    bundles: Vec<(String, Bundle)>,
}

impl Step<'_> {
    /// Carries out one action; the name of a node it started.
    fn apply(
        &mut self,
        action: &Action,
        progress: &mut dyn Progress,
    ) -> Result<Option<String>, UpError> {
        let started = match action {
            Action::Keep(_) => return Ok(None),
            Action::Create(n) => self.make(n, progress)?,
            Action::Replace { node: n, reasons } => {
                let line = format!("replace {}: {}", n.name, reasons.join(", "));
                progress.event(&line);
                let crashed_only = reasons.iter().all(|r| r == "crashed");
                if crashed_only && self.can_restart(n) {
                    self.restart(n)?
                } else {
                    self.remove(&n.name, progress)?;
                    self.make(n, progress)?
                }
            }
            Action::Delete(d) => {
                self.remove(&d.name, progress)?;
                let line = format!("delete {}", d.name);
                progress.event(&line);
                self.done.push(line);
                return Ok(None);
            }
        };
        Ok(started)
    }

    fn documents(&self, n: &NodePlan) -> Result<cloudinit::NodeDocuments, UpError> {
        cloudinit::node_documents(self.spec, self.plan, n, self.secrets).map_err(|e| {
            UpError::Documents {
                node: n.name.clone(),
                message: e.to_string(),
            }
        })
    }

    /// Creates a node from the image, or a bare-metal machine's bundle.
    fn make(
        &mut self,
        n: &NodePlan,
        progress: &mut dyn Progress,
    ) -> Result<Option<String>, UpError> {
        let docs = self.documents(n)?;
        let instance_id = cloudinit::instance_id(n);
        let mut record = NodeRecord {
            name: n.name.clone(),
            role: n.role,
            pool: n.pool.clone(),
            kind: NodeKind::Microvm,
            machine: None,
            ip: n.ip,
            mac: n.mac.clone(),
            tap: None,
            instance_id,
            pid: None,
            pid_start: None,
            started_at: None,
            ready_after: None,
            guest_uptime_at_ready: None,
        };
        let MachinePlan::Microvm {
            vcpus,
            memory_mib,
            kernel,
            image,
            tap,
            disk: root,
            seed: seed_path,
        } = &n.machine
        else {
            record.kind = NodeKind::Baremetal;
            let bundle =
                bundle::write_bundle(&self.opts.state_dir, self.spec, self.plan, n, self.secrets)
                    .map_err(|source| UpError::Node {
                    node: n.name.clone(),
                    what: "cannot write its join bundle",
                    source,
                })?;
            self.cluster.save_node(&record)?;
            let line = format!("bundle {}: {}", n.name, bundle.dir.display());
            progress.event(&line);
            self.done.push(line);
            self.bundles.push((n.name.clone(), bundle));
            self.records.insert(n.name.clone(), record);
            return Ok(None);
        };
        record.machine = Some(super::spec::MachineTemplate {
            vcpus: *vcpus,
            memory_mib: *memory_mib,
            kernel: kernel.clone(),
            image: image.clone(),
        });
        let files = self.cluster.node(&n.name);
        let had_tap = self.net.link(tap)?.is_some();
        let result = (|| -> Result<Started, UpError> {
            std::fs::create_dir_all(&files.dir).map_err(|source| UpError::Io {
                what: "cannot create the node directory",
                path: files.dir.clone(),
                source,
            })?;
            let copy_started = Instant::now();
            let method = disk::copy_image(image, root).map_err(|source| UpError::Node {
                node: n.name.clone(),
                what: "cannot copy its root disk from the image",
                source,
            })?;
            log::info!(
                "{}: root disk {} ({method}, {} ms)",
                n.name,
                root.display(),
                copy_started.elapsed().as_millis()
            );
            seed::write_seed(seed_path, &docs).map_err(|source| UpError::Node {
                node: n.name.clone(),
                what: "cannot write its cloud-init seed",
                source,
            })?;
            self.ensure_tap(tap)?;
            let config = node::vm_config(n, &files).expect("a microVM plan");
            node::start(&config, &files).map_err(|source| UpError::Node {
                node: n.name.clone(),
                what: "cannot start mercury run",
                source,
            })
        })();
        let started = match result {
            Ok(started) => started,
            Err(e) => {
                // Leave nothing of this node behind.
                let _ = self.cluster.remove_node(&n.name);
                if !had_tap {
                    let _ = self.net.delete_link(tap);
                }
                return Err(e);
            }
        };
        record.tap = Some(tap.clone());
        self.record_started(record, started)?;
        let line = format!("create {} ({}, {})", n.name, n.role, n.ip);
        progress.event(&line);
        self.done.push(line);
        Ok(Some(n.name.clone()))
    }

    /// Records `record`'s node as just started by `started` (not ready yet),
    /// on disk and in memory.
    fn record_started(&mut self, mut record: NodeRecord, started: Started) -> Result<(), UpError> {
        record.pid = Some(started.pid);
        record.pid_start = Some(started.pid_start);
        record.started_at = Some(started.started_at);
        record.ready_after = None;
        record.guest_uptime_at_ready = None;
        self.cluster.save_node(&record)?;
        self.records.insert(record.name.clone(), record);
        Ok(())
    }

    /// The node's TAP on the bridge: made if missing, put back on the
    /// bridge if it lost it (a bridge deleted and made again).
    fn ensure_tap(&self, tap: &str) -> Result<(), UpError> {
        let bridge = &self.spec.spec.network.bridge;
        match self.net.link(tap)? {
            None => self.net.create_tap(tap, bridge)?,
            Some(link) if link.master.as_deref() != Some(bridge.as_str()) => {
                self.net.attach_to_bridge(tap, bridge)?;
            }
            Some(_) => {}
        }
        Ok(())
    }

    fn can_restart(&self, n: &NodePlan) -> bool {
        let MachinePlan::Microvm { disk, seed, .. } = &n.machine else {
            return false;
        };
        self.records.contains_key(&n.name) && disk.exists() && seed.exists()
    }

    /// Waits until every node in `names` has printed its ready line. A node
    /// whose VMM exits first is started again from its disk, up to
    /// `boot_restarts` times; then `up` fails with the end of its logs.
    fn wait_ready(&mut self, names: &[String], progress: &mut dyn Progress) -> Result<(), UpError> {
        let began = Instant::now();
        let mut pending: Vec<String> = names.to_vec();
        let mut restarts: BTreeMap<String, u32> = BTreeMap::new();
        while !pending.is_empty() {
            let now = node::unix_now();
            let mut still = Vec::new();
            for name in pending {
                let record = self
                    .records
                    .get_mut(&name)
                    .expect("a started node is recorded");
                let files = self.cluster.node(&name);
                let ready = node::find_ready(&files.console(), &name, &record.instance_id)
                    .map_err(|source| UpError::Io {
                        what: "cannot read the console log",
                        path: files.console(),
                        source,
                    })?;
                if let Some(ready) = ready {
                    let after = now - record.started_at.unwrap_or(now);
                    record.ready_after = Some(after);
                    record.guest_uptime_at_ready = ready.uptime;
                    self.cluster.save_node(record)?;
                    progress.event(&format!(
                        "ready {} after {after:.1} s (guest uptime {})",
                        name,
                        ready
                            .uptime
                            .map_or("unknown".to_string(), |u| format!("{u:.1} s"))
                    ));
                    continue;
                }
                if state::process_alive(record) {
                    still.push(name);
                    continue;
                }
                let count = restarts.entry(name.clone()).or_default();
                if *count >= self.opts.boot_restarts {
                    let mut tail = node::tail(&files.vmm_log(), 10);
                    tail.push_str("\n  console.log:\n");
                    tail.push_str(&node::tail(&files.console(), 20));
                    return Err(UpError::Exited {
                        node: name,
                        log: files.vmm_log(),
                        tail,
                    });
                }
                *count += 1;
                // `mercury run`'s last line says why: `… exit="<reason>" …`.
                let last = node::tail(&files.vmm_log(), 1);
                let why = last
                    .split_once("exit=\"")
                    .and_then(|(_, rest)| rest.split_once('"'))
                    .map_or(last.trim(), |(reason, _)| reason);
                progress.event(&format!(
                    "{name} exited before it was ready ({why}); starting it again from its disk ({count} of {})",
                    self.opts.boot_restarts
                ));
                let n = self.node_plan(&name).clone();
                self.restart(&n)?;
                still.push(name);
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if began.elapsed() > self.opts.ready_timeout {
                return Err(UpError::Timeout {
                    nodes: pending,
                    timeout: self.opts.ready_timeout,
                });
            }
            let now = node::unix_now();
            let waiting: Vec<(String, f64)> = pending
                .iter()
                .map(|n| (n.clone(), now - self.records[n].started_at.unwrap_or(now)))
                .collect();
            progress.waiting(&waiting);
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    /// The plan of node `name`, which this run started or kept.
    fn node_plan(&self, name: &str) -> &NodePlan {
        self.plan
            .actions
            .iter()
            .find_map(|a| match a {
                Action::Create(n) | Action::Keep(n) | Action::Replace { node: n, .. }
                    if n.name == name =>
                {
                    Some(n)
                }
                _ => None,
            })
            .expect("a node being waited for is in the plan")
    }

    /// Starts a crashed node again on its own disk and seed.
    fn restart(&mut self, n: &NodePlan) -> Result<Option<String>, UpError> {
        let files = self.cluster.node(&n.name);
        let record = self.records[&n.name].clone();
        if let Some(tap) = n.tap() {
            self.ensure_tap(tap)?;
        }
        let config = node::vm_config(n, &files).expect("a microVM plan");
        let started = node::start(&config, &files).map_err(|source| UpError::Node {
            node: n.name.clone(),
            what: "cannot start mercury run",
            source,
        })?;
        self.record_started(record, started)?;
        self.done.push(format!("restart {} from its disk", n.name));
        Ok(Some(n.name.clone()))
    }

    /// Stops a node and removes what it owns (process, TAP, files, bundle).
    fn remove(&mut self, name: &str, progress: &mut dyn Progress) -> Result<(), UpError> {
        let Some(record) = self.records.remove(name) else {
            return Ok(());
        };
        remove_node(
            self.cluster,
            self.net,
            &record,
            self.opts.stop_grace,
            progress,
        )
    }
}

/// Stops `record`'s node and removes everything mercury made for it.
pub fn remove_node(
    cluster: &ClusterDir,
    net: &HostNet,
    record: &NodeRecord,
    grace: Duration,
    progress: &mut dyn Progress,
) -> Result<(), UpError> {
    let how = node::stop(record, grace).map_err(|source| UpError::Node {
        node: record.name.clone(),
        what: "cannot stop it",
        source,
    })?;
    if how != node::Stopped::NotRunning {
        progress.event(&format!("stopped {} ({how:?})", record.name));
    }
    if let Some(tap) = &record.tap {
        net.delete_link(tap)?;
    }
    if record.kind == NodeKind::Baremetal {
        let dir = cluster.bundle(&record.name);
        if let Err(source) = std::fs::remove_dir_all(&dir) {
            if source.kind() != io::ErrorKind::NotFound {
                return Err(UpError::Io {
                    what: "cannot remove the join bundle",
                    path: dir,
                    source,
                });
            }
        }
    }
    cluster.remove_node(&record.name)?;
    Ok(())
}
