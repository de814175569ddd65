//! Kernel side: the balancer program's maps. Names, sizes and value layouts come from
//! the shared contract in `lib.rs`; user space may shrink the large ones at load time
//! (tests do), never grow them past these constants.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray},
};
use balancer_ebpf::{
    AclData, BackendInfo, Counter, FlowKey, FlowValue, LbConfig, SynGuardKey, SynGuardState,
    VipAddr, VipKey, VipMeta, ACL_MAX_ENTRIES, FLOW_TABLE_SIZE, MAX_BACKENDS, MAX_VIPS, RING_SLOTS,
    STATS_SIZE, SYN_GUARD_ENTRIES, VIP_PORT_WORDS,
};

#[map]
pub static VIPS: HashMap<VipKey, VipMeta> = HashMap::with_max_entries(MAX_VIPS, 0);

#[map]
pub static VIP_ADDRS: HashMap<VipAddr, u32> = HashMap::with_max_entries(MAX_VIPS, 0);

/// Bit `port % 32` of word `port / 32` is set when some VIP listens on `port`.
#[map]
pub static VIP_PORTS: Array<u32> = Array::with_max_entries(VIP_PORT_WORDS, 0);

#[map]
pub static BACKENDS: Array<BackendInfo> = Array::with_max_entries(MAX_BACKENDS, 0);

#[map]
pub static RINGS: Array<u32> = Array::with_max_entries(RING_SLOTS, 0);

#[map]
pub static RING_ACTIVE: Array<u32> = Array::with_max_entries(MAX_VIPS, 0);

/// One table seen by every CPU (a flow that changes CPU keeps its backend), with the
/// common LRU list: measured faster for inserts here than `BPF_F_NO_COMMON_LRU`.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowValue> = LruHashMap::with_max_entries(FLOW_TABLE_SIZE, 0);

/// Value: any u32 (1); presence of the longest-prefix match is what counts.
#[map]
pub static ACL: LpmTrie<AclData, u32> = LpmTrie::with_max_entries(ACL_MAX_ENTRIES, 0);

#[map]
pub static SYN_GUARD: LruHashMap<SynGuardKey, SynGuardState> =
    LruHashMap::with_max_entries(SYN_GUARD_ENTRIES, 0);

#[map]
pub static CONFIG: Array<LbConfig> = Array::with_max_entries(1, 0);

#[map]
pub static STATS: PerCpuArray<Counter> = PerCpuArray::with_max_entries(STATS_SIZE, 0);
