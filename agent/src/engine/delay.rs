//! The qdiscs behind one device's delay faults: our root htb on the device for egress (its
//! original root recorded and restored), our ifb with its own root htb for ingress (fed by the
//! steering filter on the device's ingress), and one class with a netem leaf per fault.
//! All through the device's namespace's connection; the device's clsact is in place.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::EngineError;
use crate::kernel::{
    link,
    probe::Capability,
    qdisc::{self, RootQdisc, MAX_CLASSES},
    rtnl::{self, Netlink},
    KernelError,
};

/// What a delay fault asks of its device's qdiscs.
#[derive(Clone, Debug)]
pub struct DelaySpec {
    /// The netem qdisc's TCA_OPTIONS.
    pub options: Vec<u8>,
    pub duplicating: bool,
    /// Whether this kernel lets a duplicating netem share a qdisc tree with another netem.
    pub mix_allowed: bool,
}

/// Where one delay fault's netem lives: class fa17:`minor` of the device's htb (egress) and
/// of its ifb's (ingress).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayClass {
    pub minor: u16,
    pub egress: bool,
    pub ingress: bool,
    /// Its netem duplicates packets (see `DelayQdiscs::check_mix`).
    pub duplicating: bool,
}

#[derive(Debug, Default)]
pub struct DelayQdiscs {
    /// The device's root before ours; `Some` while our htb is the root.
    original_root: Option<RootQdisc>,
    /// Our ifb for the device's ingress, while a class needs it.
    ifb: Option<u32>,
    /// Every class by minor, as far as it got (a half-added one too, until removed), with its
    /// netem options, to put it back if someone removes it.
    classes: BTreeMap<u16, (DelayClass, Vec<u8>)>,
}

impl DelayQdiscs {
    /// The state a journal describes: the device's recorded root and ifb, and its classes.
    pub fn adopted(
        original_root: Option<RootQdisc>,
        ifb: Option<u32>,
        classes: Vec<(DelayClass, Vec<u8>)>,
    ) -> Self {
        Self {
            original_root,
            ifb,
            classes: classes.into_iter().map(|c| (c.0.minor, c)).collect(),
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

    fn on_side(&self, egress: bool) -> impl Iterator<Item = &(DelayClass, Vec<u8>)> {
        self.classes
            .values()
            .filter(move |(c, _)| if egress { c.egress } else { c.ingress })
    }

    /// Refuses a class that would put a duplicating netem in one qdisc tree (the device's for
    /// egress, the ifb's for ingress) with another netem, where the kernel refuses that too
    /// (stable kernels gained the restriction in 2025; the start-up probe finds out).
    pub fn check_mix(
        &self,
        (egress, ingress): (bool, bool),
        spec: &DelaySpec,
    ) -> Result<(), KernelError> {
        let clashes = |side: bool| {
            self.on_side(side)
                .any(|(c, _)| c.duplicating || spec.duplicating)
        };
        let clash = (egress && clashes(true)) || (ingress && clashes(false));
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

    /// Adds a class with the spec's netem on the egress root and/or the ingress ifb; all of it
    /// or none of it. A new ifb needs its steering filter, which the caller attaches.
    pub async fn add(
        &mut self,
        nl: &Netlink,
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
            ingress: false,
            duplicating: spec.duplicating,
        };
        self.classes.insert(minor, (class, spec.options.clone()));
        if let Err(e) = self
            .add_parts(nl, ifindex, &mut class, egress, ingress)
            .await
        {
            for undo in self.remove(nl, ifindex, &class).await {
                tracing::error!(error = %undo, "rolling back a failed delay class");
            }
            return Err(e.into());
        }
        Ok(class)
    }

    /// Each part recorded in `class` (and the map) as soon as it is there, for `remove`.
    async fn add_parts(
        &mut self,
        nl: &Netlink,
        ifindex: u32,
        class: &mut DelayClass,
        egress: bool,
        ingress: bool,
    ) -> Result<(), KernelError> {
        let options = self.classes[&class.minor].1.clone();
        if egress {
            if self.on_side(true).next().is_none() {
                let original =
                    qdisc::root_qdisc(nl, ifindex)
                        .await?
                        .ok_or(KernelError::DeviceNotFound {
                            dev: format!("ifindex {ifindex}"),
                        })?;
                qdisc::install_root(nl, ifindex).await?;
                self.original_root = Some(original);
            }
            class.egress = true;
            self.record(class);
            qdisc::add_delay_class(nl, ifindex, class.minor, options.clone()).await?;
        }
        if ingress {
            let ifb = match self.ifb {
                Some(ifb) => ifb,
                None => self.new_ifb(nl, ifindex).await?,
            };
            class.ingress = true;
            self.record(class);
            qdisc::add_delay_class(nl, ifb, class.minor, options).await?;
        }
        Ok(())
    }

    fn record(&mut self, class: &DelayClass) {
        if let Some(entry) = self.classes.get_mut(&class.minor) {
            entry.0 = *class;
        }
    }

    /// Our ifb for `ifindex`'s ingress, with our htb as its root.
    async fn new_ifb(&mut self, nl: &Netlink, ifindex: u32) -> Result<u32, KernelError> {
        let ifb = link::create_ifb(nl, &link::ifb_name(ifindex)).await?;
        self.ifb = Some(ifb);
        qdisc::install_root(nl, ifb).await?;
        Ok(ifb)
    }

    /// Removes every class at once: the device's root restored (our htb and its classes go
    /// with it) and the ifb deleted (the caller detached its steering filter). Returns every
    /// error met.
    pub async fn teardown(&mut self, nl: &Netlink, ifindex: u32) -> Vec<KernelError> {
        let mut errors = Vec::new();
        if let Some(original) = self.original_root.take() {
            errors.extend(qdisc::restore_root(nl, ifindex, &original).await.err());
        }
        if let Some(ifb) = self.ifb.take() {
            errors.extend(ignore_missing(link::delete_link(nl, ifb).await));
        }
        *self = Self::default();
        errors
    }

    /// Removes a class (tolerating half-added ones); the last egress user restores the
    /// device's root, the last ingress user deletes the ifb (the caller detaches its steering
    /// filter first: `needs_ifb`). Returns every error met.
    pub async fn remove(
        &mut self,
        nl: &Netlink,
        ifindex: u32,
        class: &DelayClass,
    ) -> Vec<KernelError> {
        let mut errors = Vec::new();
        self.classes.remove(&class.minor);
        if class.egress {
            let deleted = qdisc::delete_delay_class(nl, ifindex, class.minor).await;
            errors.extend(ignore_missing(deleted));
            if self.on_side(true).next().is_none() {
                if let Some(original) = self.original_root.take() {
                    errors.extend(qdisc::restore_root(nl, ifindex, &original).await.err());
                }
            }
        }
        if let (true, Some(ifb)) = (class.ingress, self.ifb) {
            let deleted = qdisc::delete_delay_class(nl, ifb, class.minor).await;
            errors.extend(ignore_missing(deleted));
        }
        if !self.needs_ifb() {
            if let Some(ifb) = self.ifb.take() {
                errors.extend(ignore_missing(link::delete_link(nl, ifb).await));
            }
        }
        errors
    }

    /// Whether a class delays the device's ingress (and so needs the ifb and its steering).
    pub fn needs_ifb(&self) -> bool {
        self.on_side(false).next().is_some()
    }

    /// Whether a class other than `minor` delays the device's ingress.
    pub fn has_other_ingress(&self, minor: u16) -> bool {
        self.on_side(false).any(|(c, _)| c.minor != minor)
    }

    /// Puts back what someone else removed: our root htb and its classes on the device, the
    /// ifb, its root and classes. Returns what was put back, described.
    pub async fn repair(&mut self, nl: &Netlink, ifindex: u32) -> Result<Vec<String>, KernelError> {
        let mut put_back = Vec::new();
        if self.on_side(true).next().is_some() {
            self.repair_tree(nl, ifindex, true, &mut put_back).await?;
        }
        if self.needs_ifb() {
            let links = link::list_links(nl).await?;
            let present = self
                .ifb
                .is_some_and(|ifb| links.iter().any(|(index, _)| *index == ifb));
            if !present {
                let ifb = self.new_ifb(nl, ifindex).await?;
                put_back.push(format!("the ifb of ifindex {ifindex} (now ifindex {ifb})"));
            }
            if let Some(ifb) = self.ifb {
                self.repair_tree(nl, ifb, false, &mut put_back).await?;
            }
        }
        Ok(put_back)
    }

    /// Our root htb on `dev` and the side's classes, each put back if missing.
    async fn repair_tree(
        &self,
        nl: &Netlink,
        dev: u32,
        egress: bool,
        put_back: &mut Vec<String>,
    ) -> Result<(), KernelError> {
        if !qdisc::root_is_ours(nl, dev).await? {
            qdisc::install_root(nl, dev).await?;
            put_back.push(format!("the htb root of ifindex {dev}"));
        }
        let present = qdisc::delay_classes(nl, dev).await?;
        for (class, options) in self.on_side(egress) {
            match present.iter().find(|(minor, _)| *minor == class.minor) {
                Some((_, true)) => continue,
                // A class without its netem leaf goes, to come back whole.
                Some((_, false)) => qdisc::delete_delay_class(nl, dev, class.minor).await?,
                None => {}
            }
            qdisc::add_delay_class(nl, dev, class.minor, options.clone()).await?;
            put_back.push(format!(
                "netem class {:x} of ifindex {dev}",
                qdisc::class_handle(class.minor)
            ));
        }
        Ok(())
    }
}

/// Something already gone (never fully added, or removed with its device) is what removal
/// wants anyway.
fn ignore_missing(result: Result<(), KernelError>) -> Option<KernelError> {
    match result {
        Err(e) if matches!(rtnl::errno(&e), Some(libc::ENOENT | libc::ENODEV)) => None,
        Err(KernelError::DeviceNotFound { .. }) => None,
        other => other.err(),
    }
}
