"""Names the traces use: kernels, framework ops and Python frames, per engine and GPU.

Kernel names are taken from real vLLM / SGLang traces (see tests/data/real-traces/) so that
detectors and importers see the strings they will meet in production.
"""

from __future__ import annotations

from dataclasses import dataclass

NCCL_ALLREDUCE = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevComm*, unsigned long, ncclWork*)"
NCCL_ALLREDUCE_LL128 = "ncclDevKernel_AllReduce_Sum_bf16_RING_LL128(ncclDevComm*, unsigned long, ncclWork*)"
NCCL_SENDRECV = "ncclDevKernel_SendRecv(ncclDevComm*, unsigned long, ncclWork*)"
# NCCL before 2.19 named its kernels ncclKernel_<Coll>_<Algo>_<Proto>_<Op>_<type>.
NCCL_LEGACY = {
    NCCL_ALLREDUCE: "ncclKernel_AllReduce_RING_LL_Sum_bf16(ncclDevComm*, unsigned long, ncclWork*)",
    NCCL_ALLREDUCE_LL128: "ncclKernel_AllReduce_RING_LL128_Sum_bf16(ncclDevComm*, unsigned long, ncclWork*)",
    NCCL_SENDRECV: "ncclKernel_SendRecv(ncclDevComm*, unsigned long, ncclWork*)",
}


def nccl_kernel(name: str, nccl_version: str) -> str:
    """The kernel name the given NCCL version prints for a (modern-named) collective kernel."""
    major_minor = tuple(int(x) for x in nccl_version.split(".")[:2])
    return NCCL_LEGACY.get(name, name) if major_minor < (2, 19) else name


MEMCPY_H2D = "Memcpy HtoD (Pinned -> Device)"
MEMCPY_H2D_PAGEABLE = "Memcpy HtoD (Pageable -> Device)"
MEMCPY_D2H = "Memcpy DtoH (Device -> Pageable)"
MEMCPY_D2H_PINNED = "Memcpy DtoH (Device -> Pinned)"

_EMBED = (
    "void at::native::(anonymous namespace)::indexSelectLargeIndex<c10::BFloat16, long, unsigned int, 2, 2, -2, true>"
    "(at::cuda::detail::TensorInfo<c10::BFloat16, unsigned int>, at::cuda::detail::TensorInfo<c10::BFloat16 const, unsigned int>, "
    "at::cuda::detail::TensorInfo<long const, unsigned int>, int, int, unsigned int, unsigned int, long)"
)
_ARGMAX = (
    "void at::native::reduce_kernel<512, 1, at::native::ReduceOp<c10::BFloat16, at::native::ArgMaxOps<c10::BFloat16>, "
    "unsigned int, long, 4> >(at::native::ReduceOp<c10::BFloat16, at::native::ArgMaxOps<c10::BFloat16>, unsigned int, long, 4>)"
)
_SOFTMAX = (
    "void at::native::(anonymous namespace)::cunn_SoftMaxForward<4, float, float, float, at::native::(anonymous namespace)::"
    "SoftMaxForwardEpilogue>(float*, float const*, int)"
)

_GEMM = {
    # (small-M decode tile, large-M prefill tile)
    "A100": ("ampere_bf16_s16816gemm_bf16_64x64_ldg8_f2f_stages_64x5_tn", "ampere_bf16_s16816gemm_bf16_256x128_ldg8_f2f_stages_64x3_tn"),
    "H100": (
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize64x64x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1_execute_segment_k_off_kernel__5x_cublas",
    ),
    "H200": (
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize64x64x64_warpgroupsize1x1x1_execute_segment_k_off_kernel__5x_cublas",
        "sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x256x64_warpgroupsize2x1x1_execute_segment_k_off_kernel__5x_cublas",
    ),
    "B200": ("nvjet_tst_64x16_64x16_2x4_2cta_h_bz_bias_TNT", "nvjet_tst_144x128_64x6_2x1_v_bz_bias_TNN"),
}

_VLLM = {
    "norm": "std::enable_if<(((8)>(0)))&&vllm::_typeConvert<c10::BFloat16>::exists, void>::type vllm::fused_add_rms_norm_kernel<c10::BFloat16, 8>(c10::BFloat16*, long, c10::BFloat16*, c10::BFloat16 const*, float, int, int)",
    "rotary": "void vllm::rotary_embedding_kernel<c10::BFloat16, true>(long const*, c10::BFloat16*, c10::BFloat16*, c10::BFloat16 const*, int, long, long, long, int, int, int)",
    "cache": "void vllm::reshape_and_cache_flash_kernel<__nv_bfloat16, __nv_bfloat16, (vllm::Fp8KVCacheDataType)0>(__nv_bfloat16 const*, __nv_bfloat16 const*, __nv_bfloat16*, __nv_bfloat16*, long const*, long, long, long, long, long, int, int, int, float const*, float const*)",
    "act": "void vllm::act_and_mul_kernel<c10::BFloat16, &(c10::BFloat16 vllm::silu_kernel<c10::BFloat16>(c10::BFloat16 const&)), true>(c10::BFloat16*, c10::BFloat16 const*, int)",
    "attn_decode": "void flash::flash_fwd_splitkv_kernel<Flash_fwd_kernel_traits<128, 64, 128, 4, false, false, cutlass::bfloat16_t, Flash_kernel_traits<128, 64, 128, 4, cutlass::bfloat16_t> >, false, true, false, false, true, true, false, false>(flash::Flash_fwd_params)",
    "attn_prefill": "void flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 128, 64, 4, false, false, cutlass::bfloat16_t, Flash_kernel_traits<128, 128, 64, 4, cutlass::bfloat16_t> >, false, true, false, false, true, true, false, false>(flash::Flash_fwd_params)",
    "attn_decode_b200": "fmhaSm100aKernel_QkvE4m3OBfloat16H64PagedKvCausalP16VarSeqQ128Kv128PersistentContext",
    "attn_prefill_b200": "fmhaSm100aKernel_QkvE4m3OBfloat16H64PagedKvSlidingOrChunkedCausalP16VarSeqQ128Kv128PersistentContext",
}
_SGLANG = {
    "norm": "void flashinfer::norm::FusedAddRMSNormKernel<8u, __nv_bfloat16>(__nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, unsigned int, unsigned int, unsigned int, float, float)",
    "rotary": "void flashinfer::BatchQKApplyRotaryPosIdsCosSinCacheHeadParallelismKernel<true, 128u, 8u, 16u, __nv_bfloat16, long>(__nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, __nv_bfloat16*, float*, long*, unsigned int, unsigned int, unsigned int, unsigned int, unsigned long, unsigned long, unsigned long, unsigned long, unsigned long, unsigned long, unsigned long, unsigned long)",
    "cache": "void at::native::index_elementwise_kernel<128, 4, at::native::gpu_index_kernel<at::native::index_put_kernel_impl<at::native::OpaqueType<2> >(at::TensorIterator&, c10::ArrayRef<long>, c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1}>(at::TensorIteratorBase&, c10::ArrayRef<long>, c10::ArrayRef<long>, at::native::index_put_kernel_impl<at::native::OpaqueType<2> >(at::TensorIterator&, c10::ArrayRef<long>, c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1} const&, bool)::{lambda(int)#1}>(long, at::native::gpu_index_kernel<at::native::index_put_kernel_impl<at::native::OpaqueType<2> >(at::TensorIterator&, c10::ArrayRef<long>, c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1}>(at::TensorIteratorBase&, c10::ArrayRef<long>, c10::ArrayRef<long>, at::native::index_put_kernel_impl<at::native::OpaqueType<2> >(at::TensorIterator&, c10::ArrayRef<long>, c10::ArrayRef<long>)::{lambda(char*, char const*, long)#1} const&, bool)::{lambda(int)#1})",
    "act": "void flashinfer::activation::act_and_mul_kernel<__nv_bfloat16, &(float silu<float>(float const&))>(__nv_bfloat16*, __nv_bfloat16 const*, int)",
    "attn_decode": "void flashinfer::BatchDecodeWithPagedKVCacheKernel<(flashinfer::PosEncodingMode)0, 2u, 4u, 8u, 16u, 1u, 8u, __nv_bfloat16, __nv_bfloat16, __nv_bfloat16, int, flashinfer::DefaultAttention<false, false, false, false> >(flashinfer::BatchDecodeParams<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16, int>)",
    "attn_prefill": "void flashinfer::BatchPrefillWithRaggedKVCacheKernel<flashinfer::KernelTraits<(flashinfer::MaskMode)1, 128u, 1u, 8u, 8u, 8u, 1u, 4u, (flashinfer::PosEncodingMode)0, __nv_bfloat16, __nv_bfloat16, __nv_bfloat16, float, int, flashinfer::DefaultAttention<false, false, false, false> >, flashinfer::BatchPrefillRaggedParams<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16, int> >(flashinfer::BatchPrefillRaggedParams<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16, int>)",
}


@dataclass(frozen=True)
class Frames:
    """Python frames (python_function names) and framework op names of one engine."""

    dequeue: str
    schedule: str
    execute: str
    prepare: str
    layer: str
    all_reduce_py: str
    all_reduce_op: str
    norm_op: str
    rotary_op: str
    cache_op: str
    attn_op: str
    act_op: str
    sampler: str
    graph_replay: str
    pp_send_py: str
    pp_recv_py: str
    gc_stall: str
    storage_load: str
    storage_read: str
    kv_swap: str


def frames(engine: str, arch: str) -> Frames:
    if engine == "sglang":
        return Frames(
            dequeue="sglang/srt/managers/scheduler.py(1021): recv_requests",
            schedule="sglang/srt/managers/scheduler.py(1436): get_next_batch_to_run",
            execute="sglang/srt/model_executor/model_runner.py(1512): forward",
            prepare="sglang/srt/model_executor/forward_batch_info.py(283): init_new",
            layer=f"sglang/srt/models/{arch}.py(241): forward",
            all_reduce_py="sglang/srt/distributed/communication_op.py(11): tensor_model_parallel_all_reduce",
            all_reduce_op="sglang::inplace_all_reduce",
            norm_op="sgl_kernel::fused_add_rmsnorm",
            rotary_op="sgl_kernel::apply_rope_pos_ids_cos_sin_cache",
            cache_op="aten::index_put_",
            attn_op="sglang::unified_attention_with_output",
            act_op="sgl_kernel::silu_and_mul",
            sampler="sglang/srt/layers/sampler.py(65): forward",
            graph_replay="sglang/srt/model_executor/cuda_graph_runner.py(644): replay",
            pp_send_py="sglang/srt/distributed/parallel_state.py(812): send_tensor_dict",
            pp_recv_py="sglang/srt/distributed/parallel_state.py(870): recv_tensor_dict",
            gc_stall="sglang/srt/managers/scheduler.py(1102): process_input_requests",
            storage_load="sglang/srt/lora/lora_manager.py(162): load_lora_adapter",
            storage_read="safetensors/torch.py(311): load_file",
            kv_swap="sglang/srt/mem_cache/hiradix_cache.py(214): write_backup",
        )
    return Frames(
        dequeue="vllm/distributed/device_communicators/shm_broadcast.py(509): dequeue",
        schedule="vllm/v1/core/sched/scheduler.py(213): schedule",
        execute="vllm/v1/worker/gpu_model_runner.py(1510): execute_model",
        prepare="vllm/v1/worker/gpu_model_runner.py(664): _prepare_inputs",
        layer=f"vllm/model_executor/models/{arch}.py(318): forward",
        all_reduce_py="vllm/distributed/communication_op.py(12): tensor_model_parallel_all_reduce",
        all_reduce_op="vllm::all_reduce",
        norm_op="_C::fused_add_rms_norm",
        rotary_op="_C::rotary_embedding",
        cache_op="_C_cache_ops::reshape_and_cache_flash",
        attn_op="vllm::unified_attention_with_output",
        act_op="_C::silu_and_mul",
        sampler="vllm/v1/sample/sampler.py(53): forward",
        graph_replay="torch/cuda/graphs.py(113): replay",
        pp_send_py="vllm/distributed/parallel_state.py(750): send_tensor_dict",
        pp_recv_py="vllm/distributed/parallel_state.py(822): recv_tensor_dict",
        gc_stall="vllm/v1/engine/core.py(279): step",
        storage_load="vllm/lora/worker_manager.py(84): _load_adapter",
        storage_read="safetensors/torch.py(311): load_file",
        kv_swap="vllm/v1/kv_offload/worker/cpu_gpu.py(127): transfer_async",
    )


def kernel_names(engine: str, gpu: str) -> dict[str, str]:
    """Kernel name for each op key; GEMMs and attention pick a tile by phase at emission."""
    base = dict(_SGLANG if engine == "sglang" else _VLLM)
    if engine == "vllm" and gpu == "B200":
        base["attn_decode"], base["attn_prefill"] = base["attn_decode_b200"], base["attn_prefill_b200"]
    base["gemm_small"], base["gemm_large"] = _GEMM[gpu]
    base.update(embed=_EMBED, argmax=_ARGMAX, softmax=_SOFTMAX)
    return base


# Roofline constants per GPU: effective HBM bytes/s, effective bf16 FLOP/s, NVLink bytes/s
# per GPU, inter-node bytes/s per GPU (one 400G/200G NIC each), PCIe bytes/s.
GPU_SPEC: dict[str, dict[str, float]] = {
    "A100": {"hbm": 1.6e12, "flops": 230e12, "nvlink": 200e9, "net": 20e9, "pcie": 20e9, "tdp": 400.0, "clock": 1410.0, "mem_gb": 80.0},
    "H100": {"hbm": 2.6e12, "flops": 600e12, "nvlink": 350e9, "net": 40e9, "pcie": 45e9, "tdp": 700.0, "clock": 1980.0, "mem_gb": 80.0},
    "H200": {"hbm": 3.8e12, "flops": 620e12, "nvlink": 350e9, "net": 40e9, "pcie": 45e9, "tdp": 700.0, "clock": 1980.0, "mem_gb": 141.0},
    "B200": {"hbm": 6.0e12, "flops": 1400e12, "nvlink": 700e9, "net": 80e9, "pcie": 50e9, "tdp": 1000.0, "clock": 1965.0, "mem_gb": 180.0},
}
