//! Fabrics commands: Connect, Property Get/Set, Disconnect, authentication.

use super::{Connection, PortKind, QueueBinding, Reply};
use crate::nvme::fabrics::{
    fctype, invalid_parameter_dw0, property, ConnectCommand, ConnectData, ConnectDataError,
    CATTR_DISABLE_SQ_FLOW, CC_ENABLE, CC_SHN_MASK, CONNECT_CMD_QID_OFFSET,
    CONNECT_CMD_SQSIZE_OFFSET, CONNECT_DATA_CNTLID_OFFSET, CONNECT_DATA_HOSTNQN_OFFSET,
    CONNECT_DATA_SUBNQN_OFFSET, CSTS_FATAL, CSTS_READY, CSTS_SHUTDOWN_COMPLETE,
};
use crate::nvme::identify::ControllerType;
use crate::nvme::{Command, DISCOVERY_NQN};
use crate::status::Status;
use crate::wire::Fields;

/// NVMe version 1.3.0 (VS property and Identify VER).
pub(crate) const NVME_VERSION: u32 = 0x0001_0300;
/// CAP.TO in 500 ms units: 7.5 s for enable/disable transitions.
const CAP_TIMEOUT_UNITS: u64 = 15;
/// CAP.CSS bit 0 (bit 37): NVM command set supported.
const CAP_CSS_NVM: u64 = 1 << 37;

fn invalid_data(offset: u16) -> Reply {
    Reply::dw0(
        Status::ConnectInvalidParameters,
        invalid_parameter_dw0(true, offset),
    )
}

fn invalid_cmd(offset: u16) -> Reply {
    Reply::dw0(
        Status::ConnectInvalidParameters,
        invalid_parameter_dw0(false, offset),
    )
}

impl Connection {
    pub(super) fn fabrics(&mut self, cmd: &Command, data: &[u8]) -> Reply {
        match cmd.fctype() {
            fctype::CONNECT => self.connect(cmd, data),
            fctype::PROPERTY_GET => self.property_get(cmd),
            fctype::PROPERTY_SET => self.property_set(cmd),
            fctype::DISCONNECT => match &self.queue {
                None => Reply::status(Status::CommandSequenceError),
                // Only an I/O queue is disconnected this way; a host ends the
                // whole association by closing the admin queue's connection.
                Some(q) if q.qid == 0 => Reply::status(Status::DisconnectInvalidQueueType),
                Some(_) => {
                    // The reply goes out first; the queue is released right after.
                    self.pending_disconnect = true;
                    Reply::ok()
                }
            },
            // Authentication is not configured on this target: no AUTHREQ is ever
            // set in a Connect response, so these commands are not supported.
            fctype::AUTH_SEND | fctype::AUTH_RECEIVE => Reply::status(Status::InvalidOpcode),
            _ => Reply::status(Status::InvalidOpcode),
        }
    }

    fn connect(&mut self, cmd: &Command, data: &[u8]) -> Reply {
        if self.queue.is_some() {
            return Reply::status(Status::CommandSequenceError);
        }
        let cc = ConnectCommand::from_command(cmd);
        if cc.recfmt != 0 {
            return Reply::status(Status::ConnectIncompatibleFormat);
        }
        let cd = match ConnectData::decode(data) {
            Ok(cd) => cd,
            Err(ConnectDataError::Length(_)) => return Reply::status(Status::SglLengthInvalid),
            Err(ConnectDataError::Field(off)) => return invalid_data(off),
        };
        let limits = self.ctx.limits;
        if cc.sqsize == 0 || cc.sqsize >= limits.queue_depth_max {
            return invalid_cmd(CONNECT_CMD_SQSIZE_OFFSET);
        }
        let subsystem = self.ctx.subsystem.clone();
        let now_ms = self.now_ms;
        let controller = if cc.qid == 0 {
            if cd.cntlid != 0xFFFF {
                // Only the dynamic controller model is offered.
                return invalid_data(CONNECT_DATA_CNTLID_OFFSET);
            }
            let kind = if cd.subsys_nqn == DISCOVERY_NQN {
                ControllerType::Discovery
            } else if cd.subsys_nqn == subsystem.nqn() && self.ctx.port_kind == PortKind::Io {
                ControllerType::Io
            } else {
                return invalid_data(CONNECT_DATA_SUBNQN_OFFSET);
            };
            if kind == ControllerType::Io && !subsystem.host_allowed(&cd.host_nqn) {
                tracing::info!(host = %cd.host_nqn, "connect refused: host not allowed");
                return Reply::dw0(
                    Status::ConnectInvalidHost,
                    invalid_parameter_dw0(true, CONNECT_DATA_HOSTNQN_OFFSET),
                );
            }
            // A discovery controller without keep-alive gets one, as Linux's
            // nvmet does, so a silent host cannot hold its place for ever.
            let kato_ms = if kind == ControllerType::Discovery && cc.kato_ms == 0 {
                u32::try_from(self.ctx.discovery_keep_alive.as_millis()).unwrap_or(u32::MAX)
            } else {
                cc.kato_ms
            };
            let controller = match subsystem.create_controller(
                kind,
                &cd.host_nqn,
                self.ctx.peer_addr.ip(),
                cd.host_id,
                kato_ms,
                now_ms,
            ) {
                Ok(c) => c,
                Err(_) => return Reply::status(Status::ConnectControllerBusy),
            };
            controller.state.lock().notifier = Some(self.ctx.notifier.clone());
            controller
        } else {
            let Some(controller) = subsystem.controller(cd.cntlid) else {
                return invalid_data(CONNECT_DATA_CNTLID_OFFSET);
            };
            if controller.is_dead() || controller.kind != ControllerType::Io {
                return invalid_data(CONNECT_DATA_CNTLID_OFFSET);
            }
            if cd.subsys_nqn != subsystem.nqn() || self.ctx.port_kind != PortKind::Io {
                return invalid_data(CONNECT_DATA_SUBNQN_OFFSET);
            }
            if controller.host_nqn != cd.host_nqn {
                return invalid_data(CONNECT_DATA_HOSTNQN_OFFSET);
            }
            if controller.host_id != cd.host_id {
                return invalid_data(0);
            }
            let mut st = controller.state.lock();
            let max_qid = st
                .queues_granted
                .map_or(limits.io_queues_max, |g| g.saturating_add(1));
            if cc.qid > max_qid || st.io_queues.contains(&cc.qid) {
                return invalid_cmd(CONNECT_CMD_QID_OFFSET);
            }
            if st.csts & CSTS_READY == 0 {
                return Reply::status(Status::CommandSequenceError);
            }
            st.io_queues.push(cc.qid);
            drop(st);
            controller
        };
        let cntlid = controller.cntlid;
        // Generation first: `publish_view` stores the view before it bumps
        // the generation, so the view read next is at least this new. The
        // other order could pair an old view (and its ANA states) with a
        // new generation and keep it until the next change.
        let view_generation = controller.view_generation();
        let view = controller.view();
        controller.touch(now_ms);
        self.queue = Some(QueueBinding {
            controller,
            qid: cc.qid,
            sqsize: cc.sqsize,
            sq_flow_disabled: cc.cattr & CATTR_DISABLE_SQ_FLOW != 0,
            view,
            view_generation,
        });
        self.sq_head = 1;
        tracing::debug!(cntlid, qid = cc.qid, sqsize = cc.sqsize, "queue connected");
        Reply::dw0(
            Status::Success,
            if cc.qid == 0 { u32::from(cntlid) } else { 0 },
        )
    }

    fn capabilities(&self) -> u64 {
        let mqes = u64::from(self.ctx.limits.queue_depth_max.saturating_sub(1));
        mqes | (CAP_TIMEOUT_UNITS << 24) | CAP_CSS_NVM
    }

    fn property_get(&mut self, cmd: &Command) -> Reply {
        let Some(q) = self.binding() else {
            return Reply::status(Status::CommandSequenceError);
        };
        if q.qid != 0 {
            return Reply::status(Status::InvalidField);
        }
        let f = Fields(&cmd.0);
        let eight_bytes = f.u8(40).unwrap_or(0) & 1 != 0;
        let offset = f.u32(44).unwrap_or(u32::MAX);
        let st = q.controller.state.lock();
        let value = match (offset, eight_bytes) {
            (property::CAP, _) => {
                let cap = self.capabilities();
                if eight_bytes {
                    cap
                } else {
                    cap & 0xFFFF_FFFF
                }
            }
            (o, false) if o == property::CAP + 4 => self.capabilities() >> 32,
            (property::VS, false) => u64::from(NVME_VERSION),
            (property::CC, false) => u64::from(st.cc),
            (property::CSTS, false) => u64::from(st.csts),
            (property::NSSR, false) => 0,
            _ => return Reply::status(Status::InvalidField),
        };
        Reply {
            result: value,
            ..Reply::ok()
        }
    }

    fn property_set(&mut self, cmd: &Command) -> Reply {
        let Some(q) = self.binding() else {
            return Reply::status(Status::CommandSequenceError);
        };
        if q.qid != 0 {
            return Reply::status(Status::InvalidField);
        }
        let f = Fields(&cmd.0);
        let eight_bytes = f.u8(40).unwrap_or(0) & 1 != 0;
        let offset = f.u32(44).unwrap_or(u32::MAX);
        let value = f.u64(48).unwrap_or(0);
        if offset != property::CC || eight_bytes {
            return Reply::status(Status::InvalidField);
        }
        let new = value as u32;
        let kind = q.controller.kind;
        let mut st = q.controller.state.lock();
        let old = st.cc;
        st.cc = new;
        if new & CC_ENABLE != 0 && old & CC_ENABLE == 0 {
            let iosqes = (new >> 16) & 0xF;
            let iocqes = (new >> 20) & 0xF;
            if kind == ControllerType::Io && (iosqes != 6 || iocqes != 4) {
                st.csts |= CSTS_FATAL;
            } else {
                st.csts = CSTS_READY;
            }
        } else if new & CC_ENABLE == 0 && old & CC_ENABLE != 0 {
            st.csts &= !(CSTS_READY | CSTS_SHUTDOWN_COMPLETE);
        }
        if new & CC_SHN_MASK != 0 {
            // Nothing is cached in the target itself; the backend's own durability
            // contract covers acknowledged writes, so shutdown completes at once.
            st.csts |= CSTS_SHUTDOWN_COMPLETE;
        }
        Reply::ok()
    }
}
