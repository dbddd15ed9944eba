//! Clusters on a host (issue 9), the pure layer so far: the spec file
//! ([`spec`]), its validation ([`validate`]), the naming rules and the
//! nodes a spec asks for ([`nodes`]), and the planner ([`plan`]) that turns
//! spec + observed nodes into create/replace/delete/keep actions.
//! [`command`] is `mercury cluster plan`. Nothing here has side effects:
//! the steps that act on a plan (TAPs, seeds, VMs) come later.

// Used by `up` (being written); until then only tests call these.
#[allow(dead_code)]
pub mod bundle;
#[allow(dead_code)]
pub mod cloudinit;
pub mod command;
pub mod nodes;
// `Observed` is filled by `up` (not built yet); until then only tests make one.
#[allow(dead_code)]
pub mod plan;
// Used by `up` (being written); until then only tests call these.
#[allow(dead_code)]
pub mod secrets;
#[allow(dead_code)]
pub mod seed;
pub mod spec;
pub mod validate;

#[cfg(test)]
pub(crate) mod fixtures {
    use super::spec::ClusterSpec;

    /// The repository's example spec.
    pub(crate) const EXAMPLE: &str = include_str!("../../../examples/cluster.yaml");

    pub(crate) fn example() -> ClusterSpec {
        ClusterSpec::from_yaml(EXAMPLE).expect("examples/cluster.yaml parses")
    }
}
