//! Clusters on a host (issue 9): the spec file ([`spec`]), its validation
//! ([`validate`]), the naming rules and the nodes a spec asks for
//! ([`nodes`]), the planner ([`plan`]) that turns spec + observed nodes into
//! create/replace/delete/keep actions, and the side that carries a plan out:
//! the state directory ([`state`]), root disks ([`disk`]), cloud-init seeds
//! ([`cloudinit`], [`seed`], [`secrets`]), bare-metal join bundles
//! ([`bundle`]), host networking ([`hostnet`]), node processes ([`node`]),
//! convergence ([`up`]) and `status`/`down` ([`status`]). [`command`] and
//! [`ops`] are the `mercury cluster` subcommands.

pub mod bundle;
pub mod cloudinit;
pub mod command;
pub mod disk;
pub mod hostnet;
pub mod node;
pub mod nodes;
pub mod ops;
pub mod plan;
pub mod secrets;
pub mod seed;
pub mod source;
pub mod spec;
pub mod state;
pub mod status;
mod table;
pub mod up;
pub mod validate;
pub mod watch;

#[cfg(test)]
pub(crate) mod fixtures {
    use super::spec::ClusterSpec;

    /// The repository's example spec.
    pub(crate) const EXAMPLE: &str = include_str!("../../../examples/cluster.yaml");

    pub(crate) fn example() -> ClusterSpec {
        ClusterSpec::from_yaml(EXAMPLE).expect("examples/cluster.yaml parses")
    }
}
