//! The qdiscs behind one device's delay faults: our root htb on the device for egress (its
//! original root recorded and restored), our ifb with its own root htb for ingress, and one
//! class with a netem leaf per fault. Callers are inside the device's namespace.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::EngineError;
use crate::kernel::{
    link,
    qdisc::{self, RootQdisc, MAX_CLASSES},
    KernelError,
};

/// Where one delay fault's netem lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayClass {
    pub minor: u16,
    pub egress: bool,
    /// The ifb carrying the ingress class, when the fault delays ingress.
    pub ifb: Option<u32>,
}

#[derive(Debug, Default)]
pub struct DelayQdiscs {
    /// The device's root before ours; `Some` while our htb is the root.
    original_root: Option<RootQdisc>,
    egress_users: usize,
    ifb: Option<u32>,
    ingress_users: usize,
    minors: BTreeSet<u16>,
}

impl DelayQdiscs {
    pub fn is_idle(&self) -> bool {
        self.minors.is_empty()
    }

    /// The state a journal describes: the device's recorded root and ifb, and its classes.
    pub fn adopted(
        original_root: Option<RootQdisc>,
        ifb: Option<u32>,
        classes: &[DelayClass],
    ) -> Self {
        Self {
            egress_users: classes.iter().filter(|c| c.egress).count(),
            ingress_users: classes.iter().filter(|c| c.ifb.is_some()).count(),
            original_root,
            ifb,
            minors: classes.iter().map(|c| c.minor).collect(),
        }
    }

    pub fn original_root(&self) -> Option<&RootQdisc> {
        self.original_root.as_ref()
    }

    pub fn ifb(&self) -> Option<u32> {
        self.ifb
    }

    pub fn has_minor(&self, minor: u16) -> bool {
        self.minors.contains(&minor)
    }

    /// Adds a class with netem `options` on the egress root and/or the ingress ifb; all of it
    /// or none of it.
    pub fn add(
        &mut self,
        ifindex: u32,
        egress: bool,
        ingress: bool,
        options: &[u8],
    ) -> Result<DelayClass, EngineError> {
        let minor = (1..=MAX_CLASSES).find(|m| !self.minors.contains(m)).ok_or(
            EngineError::TooManyFaults {
                max: MAX_CLASSES as usize,
            },
        )?;
        let mut class = DelayClass {
            minor,
            egress: false,
            ifb: None,
        };
        self.minors.insert(minor);
        let result = self.add_parts(ifindex, &mut class, egress, ingress, options);
        if let Err(e) = result {
            for undo in self.remove(ifindex, &class) {
                tracing::error!(error = %undo, "rolling back a failed delay class");
            }
            return Err(e.into());
        }
        Ok(class)
    }

    fn add_parts(
        &mut self,
        ifindex: u32,
        class: &mut DelayClass,
        egress: bool,
        ingress: bool,
        options: &[u8],
    ) -> Result<(), KernelError> {
        if egress {
            if self.egress_users == 0 {
                let original = qdisc::root_qdisc(ifindex)?.ok_or(KernelError::DeviceNotFound {
                    dev: format!("ifindex {ifindex}"),
                })?;
                qdisc::install_root(ifindex)?;
                self.original_root = Some(original);
            }
            self.egress_users += 1;
            class.egress = true;
            qdisc::add_delay_class(ifindex, class.minor, options.to_vec())?;
        }
        if ingress {
            let ifb = match self.ifb {
                Some(ifb) => ifb,
                None => {
                    let ifb = link::create_ifb(&link::ifb_name(ifindex))?;
                    self.ifb = Some(ifb);
                    qdisc::install_root(ifb)?;
                    ifb
                }
            };
            self.ingress_users += 1;
            class.ifb = Some(ifb);
            qdisc::add_delay_class(ifb, class.minor, options.to_vec())?;
        }
        Ok(())
    }

    /// Removes every class at once: the device's root restored (our htb and its classes go
    /// with it) and the ifb deleted. Returns every error met.
    pub fn teardown(&mut self, ifindex: u32) -> Vec<KernelError> {
        let mut errors = Vec::new();
        if let Some(original) = self.original_root.take() {
            errors.extend(qdisc::restore_root(ifindex, &original).err());
        }
        if let Some(ifb) = self.ifb.take() {
            errors.extend(link::delete_link(ifb).err());
        }
        *self = Self::default();
        errors
    }

    /// Removes a class (tolerating half-added ones); the last user restores the device's root
    /// and deletes the ifb. Returns every error met.
    pub fn remove(&mut self, ifindex: u32, class: &DelayClass) -> Vec<KernelError> {
        let mut errors = Vec::new();
        self.minors.remove(&class.minor);
        if class.egress {
            errors.extend(ignore_missing(qdisc::delete_delay_class(
                ifindex,
                class.minor,
            )));
            self.egress_users = self.egress_users.saturating_sub(1);
            if self.egress_users == 0 {
                if let Some(original) = self.original_root.take() {
                    errors.extend(qdisc::restore_root(ifindex, &original).err());
                }
            }
        }
        if let Some(ifb) = class.ifb {
            errors.extend(ignore_missing(qdisc::delete_delay_class(ifb, class.minor)));
            self.ingress_users = self.ingress_users.saturating_sub(1);
        }
        if self.ingress_users == 0 {
            if let Some(ifb) = self.ifb.take() {
                errors.extend(link::delete_link(ifb).err());
            }
        }
        errors
    }
}

/// A class that is already gone (e.g. never fully added) is what removal wants anyway.
fn ignore_missing(result: Result<(), KernelError>) -> Option<KernelError> {
    match result {
        Err(e) if crate::kernel::rtnl::errno(&e) == Some(libc::ENOENT) => None,
        other => other.err(),
    }
}
