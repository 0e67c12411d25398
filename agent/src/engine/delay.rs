//! The qdiscs behind one device's delay faults: our root htb on the device for egress (its
//! original root recorded and restored), our ifb with its own root htb for ingress (fed by the
//! steering filter on the device's ingress), and one class with a netem leaf per fault.
//! Callers are inside the device's namespace, whose clsact qdisc is in place.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::EngineError;
use crate::kernel::{
    bpf::{self, Datapath},
    link,
    probe::Capability,
    qdisc::{self, RootQdisc, MAX_CLASSES},
    KernelError,
};

/// What a delay fault asks of its device's qdiscs.
#[derive(Debug)]
pub struct DelaySpec {
    /// The netem qdisc's TCA_OPTIONS.
    pub options: Vec<u8>,
    pub duplicating: bool,
    /// Whether this kernel lets a duplicating netem share a qdisc tree with another netem.
    pub mix_allowed: bool,
}

/// Where one delay fault's netem lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DelayClass {
    pub minor: u16,
    pub egress: bool,
    /// The ifb carrying the ingress class, when the fault delays ingress.
    pub ifb: Option<u32>,
    /// Its netem duplicates packets (see `DelayQdiscs::check_mix`).
    #[serde(default)]
    pub duplicating: bool,
}

#[derive(Debug, Default)]
pub struct DelayQdiscs {
    /// The device's root before ours; `Some` while our htb is the root.
    original_root: Option<RootQdisc>,
    ifb: Option<u32>,
    /// Every class by minor, as far as it got: a half-added one too, until it is removed.
    classes: BTreeMap<u16, DelayClass>,
}

impl DelayQdiscs {
    pub fn is_idle(&self) -> bool {
        self.classes.is_empty()
    }

    /// The state a journal describes: the device's recorded root and ifb, and its classes.
    pub fn adopted(
        original_root: Option<RootQdisc>,
        ifb: Option<u32>,
        classes: &[DelayClass],
    ) -> Self {
        Self {
            original_root,
            ifb,
            classes: classes.iter().map(|c| (c.minor, *c)).collect(),
        }
    }

    pub fn original_root(&self) -> Option<&RootQdisc> {
        self.original_root.as_ref()
    }

    pub fn ifb(&self) -> Option<u32> {
        self.ifb
    }

    pub fn has_minor(&self, minor: u16) -> bool {
        self.classes.contains_key(&minor)
    }

    fn egress_users(&self) -> usize {
        self.classes.values().filter(|c| c.egress).count()
    }

    fn ingress_users(&self) -> usize {
        self.classes.values().filter(|c| c.ifb.is_some()).count()
    }

    /// Refuses a class that would put a duplicating netem in one qdisc tree (the device's for
    /// egress, the ifb's for ingress) with another netem, where the kernel refuses that too
    /// (stable kernels gained the restriction in 2025; the start-up probe finds out).
    pub fn check_mix(
        &self,
        (egress, ingress): (bool, bool),
        spec: &DelaySpec,
    ) -> Result<(), KernelError> {
        let clashes = |on_side: fn(&DelayClass) -> bool| {
            self.classes
                .values()
                .filter(|c| on_side(c))
                .any(|c| c.duplicating || spec.duplicating)
        };
        let clash = (egress && clashes(|c| c.egress)) || (ingress && clashes(|c| c.ifb.is_some()));
        if !clash || spec.mix_allowed {
            return Ok(());
        }
        Err(KernelError::Unsupported {
            feature: Capability::NetemDuplicateBesideOthers.name(),
            detail: format!(
                "this kernel refuses a netem that duplicates packets beside another netem on one \
                 device, and this device already has a delay fault whose netem {}",
                if spec.duplicating {
                    "shares that side"
                } else {
                    "duplicates packets"
                }
            ),
        })
    }

    /// Adds a class with netem `options` on the egress root and/or the ingress ifb; all of it
    /// or none of it.
    pub fn add(
        &mut self,
        datapath: &Datapath,
        ifindex: u32,
        (egress, ingress): (bool, bool),
        spec: &DelaySpec,
    ) -> Result<DelayClass, EngineError> {
        self.check_mix((egress, ingress), spec)?;
        let minor = (1..=MAX_CLASSES)
            .find(|m| !self.classes.contains_key(m))
            .ok_or(EngineError::TooManyFaults {
                max: MAX_CLASSES as usize,
            })?;
        let mut class = DelayClass {
            minor,
            egress: false,
            ifb: None,
            duplicating: spec.duplicating,
        };
        self.classes.insert(minor, class);
        let options = &spec.options;
        let result = self.add_parts(datapath, ifindex, &mut class, egress, ingress, options);
        if let Err(e) = result {
            for undo in self.remove(ifindex, &class) {
                tracing::error!(error = %undo, "rolling back a failed delay class");
            }
            return Err(e.into());
        }
        Ok(class)
    }

    /// Each part recorded in `class` (and the map) as soon as it is there, for `remove`.
    fn add_parts(
        &mut self,
        datapath: &Datapath,
        ifindex: u32,
        class: &mut DelayClass,
        egress: bool,
        ingress: bool,
        options: &[u8],
    ) -> Result<(), KernelError> {
        if egress {
            if self.egress_users() == 0 {
                let original = qdisc::root_qdisc(ifindex)?.ok_or(KernelError::DeviceNotFound {
                    dev: format!("ifindex {ifindex}"),
                })?;
                qdisc::install_root(ifindex)?;
                self.original_root = Some(original);
            }
            class.egress = true;
            self.classes.insert(class.minor, *class);
            qdisc::add_delay_class(ifindex, class.minor, options.to_vec())?;
        }
        if ingress {
            let ifb = match self.ifb {
                Some(ifb) => ifb,
                None => {
                    let ifb = link::create_ifb(&link::ifb_name(ifindex))?;
                    self.ifb = Some(ifb);
                    qdisc::install_root(ifb)?;
                    datapath.attach_steer(ifindex, ifb)?;
                    ifb
                }
            };
            class.ifb = Some(ifb);
            self.classes.insert(class.minor, *class);
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
            errors.extend(bpf::detach_steer(ifindex).err());
            errors.extend(link::delete_link(ifb).err());
        }
        *self = Self::default();
        errors
    }

    /// Removes a class (tolerating half-added ones); the last user restores the device's root
    /// and deletes the ifb. Returns every error met.
    pub fn remove(&mut self, ifindex: u32, class: &DelayClass) -> Vec<KernelError> {
        let mut errors = Vec::new();
        self.classes.remove(&class.minor);
        if class.egress {
            errors.extend(ignore_missing(qdisc::delete_delay_class(
                ifindex,
                class.minor,
            )));
            if self.egress_users() == 0 {
                if let Some(original) = self.original_root.take() {
                    errors.extend(qdisc::restore_root(ifindex, &original).err());
                }
            }
        }
        if let Some(ifb) = class.ifb {
            errors.extend(ignore_missing(qdisc::delete_delay_class(ifb, class.minor)));
        }
        if self.ingress_users() == 0 {
            if let Some(ifb) = self.ifb.take() {
                // Packets stop going to the ifb before it goes.
                errors.extend(bpf::detach_steer(ifindex).err());
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
