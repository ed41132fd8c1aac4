//! Admin commands: Identify, Get Log Page, Get/Set Features, AER, Keep Alive, Abort.

use super::{Connection, Outcome, Reply, Stage, AER_MAX};
use crate::controller::Controller;
use crate::error_log::ERROR_LOG_ENTRIES;
use crate::nvme::fabrics::CSTS_READY;
use crate::nvme::identify::{
    encode_cs_independent_namespace, encode_ns_descriptors, encode_ns_list, ControllerIdentity,
    ControllerType, NamespaceIdentity, ANACAP_ALL_STATES_FIXED_GROUPS, CMIC_ANA_REPORTING,
    CMIC_MULTI_PORT_MULTI_CONTROLLER, DLFEAT_READS_ZEROES, OAES_ANA_CHANGE, OAES_DISCOVERY_CHANGE,
    OAES_NS_ATTRIBUTE, ONCS_DSM, ONCS_WRITE_ZEROES, SGLS_OFFSET, SGLS_SUPPORTED,
};
use crate::nvme::log_page::{
    encode_changed_ns_list, encode_discovery_log, encode_firmware_slot, encode_smart, slice_page,
    AddressFamily, AnaGroupDescriptor, AnaLog, DiscoveryEntry, SubsystemType,
    ANA_LSP_RETURN_GROUPS_ONLY, TREQ_DISABLE_SQ_FLOW, TREQ_SECURE_CHANNEL_NOT_SPECIFIED,
};
use crate::nvme::{admin_opcode, cns, feature, log_id, Command, DISCOVERY_NQN, IDENTIFY_LEN};
use crate::status::Status;
use crate::subsystem::NSID_MAX;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// NMIC bit 0: the namespace may be attached to several controllers.
const NMIC_SHARED: u8 = 1;
/// Keep-alive granularity reported in KAS, in 100 ms units.
const KAS_100MS_UNITS: u16 = 1;

impl Connection {
    pub(super) fn admin(&mut self, cid: u16, cmd: &Command, c2h_len: u32) -> Outcome {
        let Some(q) = self.binding() else {
            return Outcome::Done(Reply::status(Status::CommandSequenceError));
        };
        let controller = q.controller.clone();
        if controller.state.lock().csts & CSTS_READY == 0 {
            return Outcome::Done(Reply::status(Status::CommandSequenceError));
        }
        if cmd.fuse() != 0 {
            return Outcome::Done(Reply::status(Status::InvalidField));
        }
        let reply = match cmd.opcode() {
            admin_opcode::IDENTIFY => self.identify(&controller, cmd, c2h_len),
            admin_opcode::GET_LOG_PAGE => self.get_log_page(&controller, cmd, c2h_len),
            admin_opcode::GET_FEATURES => self.get_features(&controller, cmd),
            admin_opcode::SET_FEATURES => self.set_features(&controller, cmd),
            admin_opcode::KEEP_ALIVE => Reply::ok(),
            // Commands are never aborted: DW0 bit 0 set reports "not aborted".
            admin_opcode::ABORT => Reply::dw0(Status::Success, 1),
            admin_opcode::ASYNC_EVENT_REQUEST => {
                let held = self
                    .slots
                    .values()
                    .filter(|s| s.stage == Stage::AerHeld)
                    .count();
                if held >= AER_MAX {
                    Reply::status(Status::AerLimitExceeded)
                } else {
                    if let Some(slot) = self.slots.get_mut(&cid) {
                        slot.stage = Stage::AerHeld;
                    }
                    self.deliver_events();
                    return Outcome::Pending;
                }
            }
            _ => Reply::status(Status::InvalidOpcode),
        };
        Outcome::Done(reply)
    }

    fn visible_vwc(&self, controller: &Controller) -> bool {
        let view = controller.view();
        // Report a write cache unless every visible namespace is write-through:
        // a namespace added later may have one, and hosts read VWC only at connect.
        view.is_empty() || view.values().any(|ns| ns.backend.volatile_write_cache())
    }

    /// Whether this controller reports Asymmetric Namespace Access.
    fn ana_reporting(&self, controller: &Controller) -> bool {
        controller.kind == ControllerType::Io && self.ctx.subsystem.config().ana_reporting
    }

    fn controller_identity(&self, controller: &Controller) -> ControllerIdentity {
        let limits = self.ctx.limits;
        let sub = self.ctx.subsystem.config();
        let discovery = controller.kind == ControllerType::Discovery;
        let ana = self.ana_reporting(controller);
        let mdts = (limits.mdts_bytes / 4096).max(1).ilog2() as u8;
        // With ANA, one group per namespace (ANAGRPID = NSID, see
        // `crate::subsystem`): as many groups as NSIDs.
        let ana_groups_max = if ana { NSID_MAX } else { 0 };
        ControllerIdentity {
            serial: sub.serial.clone(),
            model: sub.model.clone(),
            firmware: sub.firmware.clone(),
            cmic: match (discovery, ana) {
                (true, _) => 0,
                (false, false) => CMIC_MULTI_PORT_MULTI_CONTROLLER,
                (false, true) => CMIC_MULTI_PORT_MULTI_CONTROLLER | CMIC_ANA_REPORTING,
            },
            mdts,
            cntlid: controller.cntlid,
            version: super::fabrics::NVME_VERSION,
            oaes: match (discovery, ana) {
                (true, _) => OAES_DISCOVERY_CHANGE,
                (false, false) => OAES_NS_ATTRIBUTE,
                (false, true) => OAES_NS_ATTRIBUTE | OAES_ANA_CHANGE,
            },
            controller_type: controller.kind,
            acl: 3,
            aerl: (AER_MAX - 1) as u8,
            frmw: 0x3,
            lpa: 0x4,
            elpe: (ERROR_LOG_ENTRIES - 1) as u8,
            kas: KAS_100MS_UNITS,
            anatt: if ana { sub.ana_transition_time_s } else { 0 },
            anacap: if ana {
                ANACAP_ALL_STATES_FIXED_GROUPS
            } else {
                0
            },
            anagrpmax: ana_groups_max,
            nanagrpid: ana_groups_max,
            maxcmd: limits.queue_depth_max,
            nn: if discovery { 0 } else { NSID_MAX },
            oncs: if discovery {
                0
            } else {
                ONCS_DSM | ONCS_WRITE_ZEROES
            },
            volatile_write_cache: !discovery && self.visible_vwc(controller),
            sgls: SGLS_SUPPORTED
                | if limits.inline_data_max > 0 {
                    SGLS_OFFSET
                } else {
                    0
                },
            // Linux sizes its ANA log buffer by MNAN and refuses ANA when MNAN
            // is 0 or above NN.
            mnan: if ana { NSID_MAX } else { 0 },
            subnqn: if discovery {
                DISCOVERY_NQN.to_owned()
            } else {
                self.ctx.subsystem.nqn().to_owned()
            },
            ioccsz: (64 + limits.inline_data_max) / 16,
            iorcsz: 1,
            icdoff: 0,
            msdbd: 1,
        }
    }

    fn identify(&mut self, controller: &Arc<Controller>, cmd: &Command, c2h_len: u32) -> Reply {
        if (c2h_len as usize) < IDENTIFY_LEN {
            return Reply::status(Status::SglLengthInvalid);
        }
        let cns_value = (cmd.cdw(10) & 0xFF) as u8;
        let csi = (cmd.cdw(11) >> 24) as u8;
        let nsid = cmd.nsid();
        // The namespace's ANA group (its NSID) when ANA is reported.
        let anagrpid = if self.ana_reporting(controller) {
            nsid
        } else {
            0
        };
        match cns_value {
            cns::CONTROLLER => Reply::data(self.controller_identity(controller).encode()),
            cns::NAMESPACE => {
                if nsid == 0 || nsid > NSID_MAX {
                    return Reply::status(Status::InvalidNamespace);
                }
                match self.namespace(nsid).map(|v| v.backend) {
                    Some(ns) => Reply::data(
                        NamespaceIdentity {
                            size_blocks: ns.capacity_blocks(),
                            block_shift: ns.block_size().shift(),
                            dlfeat: if ns.deallocated_reads_zeroes() {
                                DLFEAT_READS_ZEROES
                            } else {
                                0
                            },
                            nmic: NMIC_SHARED,
                            nguid: ns.uuid(),
                            anagrpid,
                        }
                        .encode(),
                    ),
                    // An allocated-but-inactive NSID reads as zeroes.
                    None => Reply::data(vec![0; IDENTIFY_LEN]),
                }
            }
            cns::ACTIVE_NS_LIST | cns::CS_ACTIVE_NS_LIST => {
                if cns_value == cns::CS_ACTIVE_NS_LIST && csi != 0 {
                    return Reply::data(vec![0; IDENTIFY_LEN]);
                }
                if nsid >= 0xFFFF_FFFE {
                    return Reply::status(Status::InvalidNamespace);
                }
                let view = controller.view();
                Reply::data(encode_ns_list(view.keys().copied(), nsid))
            }
            cns::NS_DESCRIPTORS => match self.namespace(nsid).map(|v| v.backend) {
                Some(ns) => Reply::data(encode_ns_descriptors(ns.uuid(), ns.uuid())),
                None => Reply::status(Status::InvalidNamespace),
            },
            cns::CS_NAMESPACE => {
                if csi != 0 {
                    return Reply::status(Status::InvalidField);
                }
                match self.namespace(nsid) {
                    // The NVM command set specific fields (PI, extended LBA
                    // formats) are all unused here.
                    Some(_) => Reply::data(vec![0; IDENTIFY_LEN]),
                    None => Reply::status(Status::InvalidNamespace),
                }
            }
            cns::CS_CONTROLLER => {
                if csi != 0 {
                    return Reply::status(Status::InvalidField);
                }
                // NVM command set controller limits (VSL, WZSL, DMRL...): zero = no limit
                // beyond MDTS.
                Reply::data(vec![0; IDENTIFY_LEN])
            }
            cns::CS_INDEPENDENT_NAMESPACE => match self.namespace(nsid) {
                Some(_) => Reply::data(encode_cs_independent_namespace(NMIC_SHARED, anagrpid)),
                None => Reply::status(Status::InvalidNamespace),
            },
            _ => Reply::status(Status::InvalidField),
        }
    }

    fn get_log_page(&mut self, controller: &Arc<Controller>, cmd: &Command, c2h_len: u32) -> Reply {
        let cdw10 = cmd.cdw(10);
        let lid = (cdw10 & 0xFF) as u8;
        let retain_event = cdw10 & (1 << 15) != 0;
        let numd = ((u64::from(cmd.cdw(11) & 0xFFFF) << 16) | u64::from(cdw10 >> 16)) + 1;
        let len = numd * 4;
        let offset = u64::from(cmd.cdw(12)) | (u64::from(cmd.cdw(13)) << 32);
        if len > u64::from(c2h_len) || len > u64::from(self.ctx.limits.mdts_bytes) {
            return Reply::status(Status::SglLengthInvalid);
        }
        if offset % 4 != 0 {
            return Reply::status(Status::InvalidField);
        }
        let len = len as usize;
        let discovery = controller.kind == ControllerType::Discovery;
        let page = match lid {
            log_id::ERROR => controller.error_log_page(),
            log_id::SMART if !discovery => {
                let c = &self.ctx.subsystem.counters;
                let units = |bytes: u64| bytes.div_ceil(512 * 1000);
                encode_smart(
                    units(c.bytes_read.load(Ordering::Relaxed)),
                    units(c.bytes_written.load(Ordering::Relaxed)),
                    c.reads.load(Ordering::Relaxed),
                    c.writes.load(Ordering::Relaxed),
                    controller.error_count(),
                )
            }
            log_id::FIRMWARE_SLOT if !discovery => {
                encode_firmware_slot(&self.ctx.subsystem.config().firmware)
            }
            log_id::CHANGED_NS_LIST if !discovery => {
                let list = if retain_event {
                    controller.state.lock().changed_ns.clone()
                } else {
                    controller.take_changed_namespaces()
                };
                encode_changed_ns_list(&list)
            }
            log_id::ANA if self.ana_reporting(controller) => {
                let groups_only = (cdw10 >> 8) as u8 & ANA_LSP_RETURN_GROUPS_ONLY != 0;
                if !retain_event {
                    controller.state.lock().ana_notice_masked = false;
                }
                self.ana_log(controller).encode(groups_only)
            }
            log_id::DISCOVERY => {
                if !retain_event {
                    controller.state.lock().discovery_notice_masked = false;
                }
                self.discovery_log(&controller.host_nqn)
            }
            _ => return Reply::status(Status::InvalidLogPage),
        };
        Reply::data(slice_page(&page, offset, len))
    }

    /// The ANA log page as `controller` sees it: one group per namespace its
    /// host may see, ascending by group id (= NSID).
    fn ana_log(&self, controller: &Controller) -> AnaLog {
        let (change_count, view) = self.ctx.subsystem.ana_view(controller);
        AnaLog {
            change_count,
            groups: view
                .iter()
                .map(|(nsid, v)| AnaGroupDescriptor {
                    anagrpid: *nsid,
                    change_count: v.ana_change_count,
                    state: v.ana_state,
                    nsids: vec![*nsid],
                })
                .collect(),
        }
    }

    /// The discovery log as `host_nqn` may see it, reporting the address the host
    /// reached (or the advertised one) for wildcard listeners, then the
    /// portals of the cluster's other nodes.
    fn discovery_log(&self, host_nqn: &str) -> Vec<u8> {
        let subsystem = &self.ctx.subsystem;
        let view = subsystem.discovery_view(host_nqn, self.ctx.peer_addr.ip());
        let mut entries = Vec::new();
        if view.visible {
            let own = self
                .ctx
                .io_listeners
                .iter()
                .map(|listener| match self.ctx.advertised_addr {
                    Some(adv) => adv,
                    None if listener.ip().is_unspecified() => {
                        std::net::SocketAddr::new(self.ctx.local_addr.ip(), listener.port())
                    }
                    None => *listener,
                });
            // Peers are other ports of the same subsystem: numbered after
            // this node's own.
            for (i, addr) in own.chain(view.peer_portals.iter().copied()).enumerate() {
                entries.push(DiscoveryEntry {
                    adrfam: if addr.is_ipv6() {
                        AddressFamily::Ipv6
                    } else {
                        AddressFamily::Ipv4
                    },
                    subtype: SubsystemType::Nvm,
                    treq: TREQ_SECURE_CHANNEL_NOT_SPECIFIED | TREQ_DISABLE_SQ_FLOW,
                    portid: u16::try_from(i + 1).unwrap_or(u16::MAX),
                    cntlid: 0xFFFF,
                    asqsz: 32,
                    trsvcid: addr.port().to_string(),
                    subnqn: subsystem.nqn().to_owned(),
                    traddr: addr.ip().to_string(),
                });
            }
        }
        encode_discovery_log(view.generation, &entries)
    }

    fn get_features(&mut self, controller: &Arc<Controller>, cmd: &Command) -> Reply {
        let fid = (cmd.cdw(10) & 0xFF) as u8;
        let select = (cmd.cdw(10) >> 8) & 0x7;
        let max_granted = self.ctx.limits.io_queues_max.saturating_sub(1);
        let st = controller.state.lock();
        let (current, default, changeable) = match fid {
            feature::NUMBER_OF_QUEUES => {
                let g = u32::from(st.queues_granted.unwrap_or(max_granted));
                let d = u32::from(max_granted);
                ((g << 16) | g, (d << 16) | d, false)
            }
            feature::ASYNC_EVENT_CONFIG => (st.aec, 0, true),
            feature::KEEP_ALIVE_TIMER => (controller.kato_ms(), 0, true),
            feature::VOLATILE_WRITE_CACHE => {
                drop(st);
                if !self.visible_vwc(controller) {
                    return Reply::status(Status::InvalidField);
                }
                let wce = controller.state.lock().write_cache_enabled;
                return Reply::dw0(
                    Status::Success,
                    match select {
                        1 => 1,
                        3 => 0b100,
                        _ => u32::from(wce),
                    },
                );
            }
            _ => return Reply::status(Status::InvalidField),
        };
        let value = match select {
            0 | 2 => current,
            1 => default,
            3 => {
                if changeable {
                    0b100
                } else {
                    0
                }
            }
            _ => return Reply::status(Status::InvalidField),
        };
        Reply::dw0(Status::Success, value)
    }

    fn set_features(&mut self, controller: &Arc<Controller>, cmd: &Command) -> Reply {
        let cdw10 = cmd.cdw(10);
        if cdw10 & (1 << 31) != 0 {
            return Reply::status(Status::FeatureNotSaveable);
        }
        let fid = (cdw10 & 0xFF) as u8;
        let cdw11 = cmd.cdw(11);
        match fid {
            feature::NUMBER_OF_QUEUES => {
                let nsqr = cdw11 & 0xFFFF;
                let ncqr = cdw11 >> 16;
                if nsqr == 0xFFFF || ncqr == 0xFFFF {
                    return Reply::status(Status::InvalidField);
                }
                let max = u32::from(self.ctx.limits.io_queues_max.saturating_sub(1));
                let granted = nsqr.min(ncqr).min(max) as u16;
                controller.state.lock().queues_granted = Some(granted);
                let g = u32::from(granted);
                Reply::dw0(Status::Success, (g << 16) | g)
            }
            feature::ASYNC_EVENT_CONFIG => {
                controller.state.lock().aec = cdw11;
                Reply::ok()
            }
            feature::KEEP_ALIVE_TIMER => {
                controller.set_kato_ms(cdw11);
                Reply::ok()
            }
            feature::VOLATILE_WRITE_CACHE => {
                if !self.visible_vwc(controller) {
                    return Reply::status(Status::InvalidField);
                }
                controller.state.lock().write_cache_enabled = cdw11 & 1 != 0;
                Reply::ok()
            }
            _ => Reply::status(Status::InvalidField),
        }
    }
}
