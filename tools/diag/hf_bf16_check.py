import sys, torch
sys.path.insert(0, "tools")
import make_hf_fixture as m
torch.set_grad_enabled(False)
for name, seed in [("dsv32_moe_groups", 0), ("dsv32_yarn_fp8", 0), ("glm_shared_bf16", 1)]:
    spec = m.FIXTURES[name]
    gen = torch.Generator().manual_seed(1000 * (1 + list(m.FIXTURES).index(name)) + seed)
    config, model = m.build_model(spec["kind"], spec["config"])
    m.randomise(model, gen)
    m.checkpoint_tensors(model, spec)
    b = max(spec["batch"], 1)
    tokens = torch.randint(0, config.vocab_size, (b, spec["seq"]), generator=gen)
    ref = model(input_ids=tokens, use_cache=False).logits.float()[0]
    for dev in ["cpu", "cuda"]:
        mb = model.to(dev).to(torch.bfloat16)
        got = mb(input_ids=tokens.to(dev), use_cache=False).logits.float().cpu()[0]
        rel = ((got - ref).norm() / ref.norm()).item()
        agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
        print(f"{name}: transformers bf16 ({dev}) vs fp32: relative L2 {rel:.3e}, argmax agreement {agree:.4f}")
        model = model.float().cpu()
