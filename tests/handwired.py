"""Small real transformers models (GPT-NeoX, OLMo) whose attention heads are set by hand.

On the study's induction batch (docs/method.md section 2) every head has a known selectivity class, so tests can
check the screen on the real model classes without checkpoints. 2 layers x 4 heads, d_head = d_model / 4:
  layer 0: h0 previous-token (also copies the previous token into a second residual subspace), h1 self,
           h2 local (offset 4: T-5 for the last query), h3 first-token (offset = last query position);
  layer 1: h0 induction (attends to ab+1), h1 duplicate-token (attends to ab, less to itself),
           h2 mixed (75% previous token, 25% position 0: first >= 30x, but its best class is previous),
           h3 window (spread over offsets 8..40: nonuniform, no class).
Residual = token embedding (subspace U) + the previous token's copy (subspace P); the MLPs write nothing.

Positional heads: q and k are constant (zero weights, biases only), so after rotary the score depends only on
the offset x = query - key. Rotary (rotate_half layout, both archs) pairs head dim f with dim f + rot/2 and
turns the pair by R(pos * theta_f), R = [[cos, -sin], [sin, cos]]; so q_f = (c, 0), k_f = (a_f, b_f) / c gives
the score sum_f a_f cos(x theta_f) + b_f sin(x theta_f). (a, b) are fitted (LBFGS, float64) so the softmax over
x in [0, Q] puts the wanted mass on the wanted offsets, with max - min score <= 50 logits (no probability
below ~1e-22: float32 ratios stay well-conditioned). Both archs get theta_f = 10^(-f/2) on pairs f = 0..4:
GPT-NeoX rotates only the first 10 head dims (rope_parameters partial_rotary_factor 10/d_head, rope_theta
10^2.5); OLMo rotates every dim (rope_theta 10^(d_head/4): pairs f >= 8 turn by <= 1e-4 rad per position).
Content heads use dims where rotary is (nearly) the identity: GPT-NeoX's unrotated dims 10.., OLMo's pairs
with theta <= 2e-4. The thetas are read back from the model's own rotary_emb.inv_freq, not assumed.
"""
from __future__ import annotations

import numpy as np
import torch

N_HEADS, N_POS_PAIRS = 4, 5  # heads per layer; rotary pairs used by the positional heads
CONTENT_LOGIT = 12.0  # score of a content match (token == token); random mismatches ~ N(0, (12 / sqrt(E))^2)
FLAT = 2e-4  # content dims: rotary pairs with theta <= FLAT (<= 0.05 rad over 257 positions)


def _layout(inv_freq, d_head):
    """(dims (u, v) of the positional pairs f = 0..4, their thetas, the content dims) of one head."""
    half = len(inv_freq)
    flat = [f for f in range(half) if inv_freq[f] <= FLAT]
    content = sorted(flat + [f + half for f in flat] + list(range(2 * half, d_head)))
    return [(f, f + half) for f in range(N_POS_PAIRS)], inv_freq[:N_POS_PAIRS].double(), content


def _kernel(theta, targets: dict[int, float], n_keys: int, spread: float = 50.0) -> torch.Tensor:
    """(N_POS_PAIRS, 2) coefficients (a_f, b_f) such that the softmax over offsets 0..n_keys-1 of
    S(x) = sum_f a_f cos(x theta_f) + b_f sin(x theta_f) fits the target distribution."""
    ang = torch.arange(n_keys, dtype=torch.float64)[:, None] * theta
    F = torch.cat([torch.cos(ang), torch.sin(ang)], 1)
    p = torch.zeros(n_keys, dtype=torch.float64)
    for x, w in targets.items():
        p[x] = w
    ab = torch.zeros(2 * N_POS_PAIRS, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ab], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        S = F @ ab  # cross-entropy to the target + a penalty on the score range + a little ridge
        loss = -(p * torch.log_softmax(S, 0)).sum() + 10 * torch.relu(S.max() - S.min() - spread) ** 2 \
            + 1e-4 * (ab ** 2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return ab.detach().view(2, N_POS_PAIRS).T.float()


def handwired_model(arch: str, seq_len: int, vocab_size: int, bos: bool = False, seed: int = 0,
                    d_model: int = 256):
    """A 2-layer GPTNeoXForCausalLM / OlmoForCausalLM (eager, eval, float32) with the heads above, built for
    the last query at Q = seq_len - 1 (+1 with a prepended BOS). Only the first-token and mixed heads depend on
    Q (an offset of exactly Q reaches position 0). d_model=128 also works (about 40% faster on CPU)."""
    import transformers as tf

    torch.manual_seed(seed)  # the parameters left as initialised (unembedding) are deterministic too
    g = torch.Generator().manual_seed(seed)
    Q, dh = seq_len - 1 + int(bos), d_model // N_HEADS
    common = dict(vocab_size=vocab_size, hidden_size=d_model, num_hidden_layers=2, num_attention_heads=N_HEADS,
                  intermediate_size=64, max_position_embeddings=max(2048, Q + 1))
    if arch == "gpt_neox":
        cfg = tf.GPTNeoXConfig(**common, use_parallel_residual=True, attention_bias=True,
                               rope_parameters={"rope_type": "default", "rope_theta": 10.0 ** 2.5,
                                                "partial_rotary_factor": 2 * N_POS_PAIRS / dh})
        model = tf.GPTNeoXForCausalLM._from_config(cfg, attn_implementation="eager")
    elif arch == "olmo":
        cfg = tf.OlmoConfig(**common, attention_bias=True, clip_qkv=None, pad_token_id=None, eos_token_id=None,
                            rope_parameters={"rope_type": "default", "rope_theta": 10.0 ** (dh / 4)})
        model = tf.OlmoForCausalLM._from_config(cfg, attn_implementation="eager")
    else:
        raise ValueError(arch)
    model = model.float().eval()
    pairs, theta, content = _layout(model.base_model.rotary_emb.inv_freq, dh)
    E = len(content)  # size of the token and previous-token subspaces

    # U, P: orthonormal, orthogonal to the all-ones vector (LayerNorm then subtracts nothing)
    m = torch.randn(d_model, 2 * E, generator=g)
    U, P = torch.linalg.qr(m - m.mean(0))[0].split(E, 1)
    z = torch.randn(vocab_size, E, generator=g)
    z = z / z.norm(dim=1, keepdim=True) * d_model ** 0.5  # |embedding|^2 = d_model: LayerNorm(e) == e

    def blank():  # one head's Wq, bq, Wk, bk, Wv, Wo; everything not set stays zero
        return dict(Wq=torch.zeros(dh, d_model), bq=torch.zeros(dh), Wk=torch.zeros(dh, d_model),
                    bk=torch.zeros(dh), Wv=torch.zeros(dh, d_model), Wo=torch.zeros(d_model, dh))
    heads = [[blank() for _ in range(N_HEADS)] for _ in range(2)]
    c = 8 ** 0.5  # |q| per pair; k carries sqrt(d_head) / c to undo the 1/sqrt(d_head) score scaling

    def positional(h, targets):
        for (u, v), (a, b) in zip(pairs, _kernel(theta, targets, Q + 1)):
            h["bq"][u] = c
            h["bk"][u], h["bk"][v] = a * dh ** 0.5 / c, b * dh ** 0.5 / c

    def content_qk(h, q_from, k_from):
        # layer 1 reads LayerNorm(e_t + P z_{t-1}) = (e_t + P z_{t-1}) / sqrt(2), so a match scores
        # alpha^2 * d_model / 2 / sqrt(d_head) = CONTENT_LOGIT
        alpha = (CONTENT_LOGIT * dh ** 0.5 / (d_model / 2)) ** 0.5
        h["Wq"][content], h["Wk"][content] = alpha * q_from.T, alpha * k_from.T

    positional(heads[0][0], {1: 1.0})
    heads[0][0]["Wv"][:E] = U.T  # value = the token's z ...
    heads[0][0]["Wo"][:, :E] = P  # ... written into subspace P, one position later
    positional(heads[0][1], {0: 1.0})
    positional(heads[0][2], {4: 1.0})
    positional(heads[0][3], {Q: 1.0})
    content_qk(heads[1][0], U, P)  # query: current token; key: previous token -> induction
    content_qk(heads[1][1], U, U)  # both the current token -> duplicate, and itself ...
    (u, _), h = pairs[-1], heads[1][1]  # ... so add a gentle ramp -2.5 cos(0.01 x) favouring older keys
    h["bq"][u], h["bk"][u] = c, -2.5 * dh ** 0.5 / c  # (self: -2.5; ab at T=256: -0.7..+1.8)
    positional(heads[1][2], {1: 0.75, Q: 0.25})
    positional(heads[1][3], {x: 1 / 33 for x in range(8, 41)})

    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(z @ U.T)
        for layer, hs in zip(model.base_model.layers, heads):
            Wq, bq, Wk, bk, Wv = (torch.cat([h[n] for h in hs]) for n in ("Wq", "bq", "Wk", "bk", "Wv"))
            Wo = torch.cat([h["Wo"] for h in hs], 1)
            if arch == "gpt_neox":
                att = layer.attention
                # the fused output is grouped per head: view (H, 3 * d_head) = [q | k | v] of each head
                W = torch.stack([w.view(N_HEADS, dh, d_model) for w in (Wq, Wk, Wv)], 1)
                b = torch.stack([bq.view(N_HEADS, dh), bk.view(N_HEADS, dh), torch.zeros(N_HEADS, dh)], 1)
                att.query_key_value.weight.copy_(W.reshape(3 * d_model, d_model))
                att.query_key_value.bias.copy_(b.reshape(-1))
                att.dense.weight.copy_(Wo)
                att.dense.bias.zero_()
                for ln in (layer.input_layernorm, layer.post_attention_layernorm):
                    ln.weight.fill_(1.0)
                    ln.bias.zero_()
                layer.mlp.dense_4h_to_h.weight.zero_()  # parallel residual: the MLP adds only its bias
                layer.mlp.dense_4h_to_h.bias.zero_()
            else:  # OLMo: separate projections; its LayerNorm has no parameters
                att = layer.self_attn
                for proj, w, bias in ((att.q_proj, Wq, bq), (att.k_proj, Wk, bk), (att.v_proj, Wv, 0 * bq)):
                    proj.weight.copy_(w)
                    proj.bias.copy_(bias)
                att.o_proj.weight.copy_(Wo)
                att.o_proj.bias.zero_()
                layer.mlp.down_proj.weight.zero_()
    return model


def _selftest(arch, T, lo, hi, bos, n=500, d_model=256):
    """Print the (L, H) selectivity of each class on the study batch (eager reference of tests/reference.py)."""
    from tests.reference import last_query_rows, study_best_class, study_inputs, study_selectivity

    inp = study_inputs(n, T, lo, hi, bos_id=0 if bos else None)
    rows = last_query_rows(handwired_model(arch, T, hi, bos=bos, d_model=d_model), inp.ids)
    sel = study_selectivity(rows, inp)
    best = study_best_class(sel)
    print(f"\n{arch} T={T} vocab=[{lo},{hi}) bos={bos} d_model={d_model}: valid rows {inp.valid.mean():.2f}, "
          f"min attention to a key {rows[rows > 0].min().item():.1e}")
    print("L H" + "".join(f"{k:>15}" for k in sel) + "  best")
    for L, H in np.ndindex(best.shape):
        print(f"{L} {H}" + "".join(f"{v[L, H]:15.1f}" for v in sel.values()) + f"  {best[L, H]}")


if __name__ == "__main__":  # python -m tests.handwired
    torch.set_num_threads(1)
    for arch in ("gpt_neox", "olmo"):
        for T, lo, hi in ((256, 100, 10000), (128, 5, 65)):
            for bos in (False, True):
                _selftest(arch, T, lo, hi, bos)
