use crate::rollout::scope::Scope;
use clap::Args;

/// Which hosts: one group, one host, or every group. Without any of them,
/// the config's `default_group`.
#[derive(Args)]
#[group(multiple = false)]
pub(crate) struct ScopeArgs {
    /// Only this group
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Only this host
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// Every group: the default group first, then the others in file order
    #[arg(long)]
    all: bool,
}

impl ScopeArgs {
    pub(crate) fn scope(&self) -> Scope {
        match (&self.group, &self.host, self.all) {
            (Some(g), _, _) => Scope::Group(g.clone()),
            (_, Some(h), _) => Scope::Host(h.clone()),
            (_, _, true) => Scope::All,
            _ => Scope::Default,
        }
    }
}
