"""MetaTrainer / MetaStepTrainer: the M3L meta-update (second order), inner Adam, resume."""

import copy
import os
import uuid

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from reid_plugins.data.catalog import DatasetCatalog, MetadataCatalog
from reid_plugins.engine import HookBase, SimpleTrainer
from reid_plugins.methods.m3l import M3L, MetaBNHead, MetaStepTrainer, MetaTrainer
from reid_plugins.methods.m3l.trainer import choose_meta_test_domain, fresh_adam_step
from reid_plugins.modeling.losses import CrossEntropyLoss, TripletLoss
from reid_plugins.solver import build_optimizer
from reid_plugins.utils.events import EventStorage
from tests.methods.m3l._helpers import DOMAINS, IDS, baseline_twin, batch, tiny_cfg, tiny_m3l


# ----------------------------------------------------------------------------- helpers
def stream(num_domains=DOMAINS):
    k = 0
    while True:
        yield [batch(d, k) for d in range(num_domains)]
        k += 1


class GradCapture(HookBase):
    def __init__(self, params):
        self.params, self.grads = params, []

    def after_backward(self):
        self.grads.append([p.grad.detach().clone() for p in self.params])


# ----------------------------------------------------------------------------- second order
class Quadratic(nn.Module):
    """theta in R^3. Meta-train loss of domain d: 0.5 theta^T A_d theta - b_d^T theta;
    meta-test loss of domain d: 0.5 ||theta - c_d||^2 (analytic Hessians)."""

    def __init__(self):
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([0.7, -1.2, 0.4], dtype=torch.float64))
        g = torch.Generator().manual_seed(3)
        m = torch.randn(DOMAINS, 3, 3, generator=g, dtype=torch.float64)
        self.A = m @ m.transpose(1, 2) + torch.eye(3, dtype=torch.float64)
        self.b = torch.randn(DOMAINS, 3, generator=g, dtype=torch.float64)
        self.c = torch.randn(DOMAINS, 3, generator=g, dtype=torch.float64)

    def forward(self, batches, *, stage="standard", update_memory=False, collector=None):
        if stage == "meta_test":
            d = batches[0]["domain"]
            return {"loss_q": 0.5 * (self.theta - self.c[d]).pow(2).sum()}
        losses = [
            0.5 * self.theta @ self.A[b[0]["domain"]] @ self.theta
            - self.b[b[0]["domain"]] @ self.theta
            for b in batches
        ]
        return {"loss_q": torch.stack(losses).mean()}


def _quadratic_step(
    inner_optimizer,
    first_order=False,
    wd=0.1,
    alpha=0.3,
    eps=0.5,
    sq=0.0,
    outer="full",
):
    """One meta-iteration on :class:`Quadratic`; returns (gradient seen by the optimiser,
    analytic first-order gradient, analytic second-order term) for the ``outer`` form."""
    model = Quadratic()
    opt = torch.optim.SGD([{"params": [model.theta], "lr": 0.0, "weight_decay": wd}], lr=0.0)
    data = [[{"domain": d}] for d in range(DOMAINS)]
    tr = MetaStepTrainer(
        model,
        iter(lambda: data, None),
        opt,
        inner_optimizer=inner_optimizer,
        inner_lr=alpha,
        base_lr=1.0,
        inner_lr_follows_schedule=False,
        inner_eps=eps,
        inner_sq_eps=sq,
        first_order=first_order,
        outer_gradient=outer,
        seed=4,
    )
    cap = GradCapture([model.theta])
    tr.register_hooks([cap])
    with EventStorage(0):
        tr.run_step()
    t = tr.last_meta_test_domain
    others = [d for d in range(DOMAINS) if d != t]
    A, b = model.A[others].mean(0), model.b[others].mean(0)
    theta = model.theta.detach()
    g = A @ theta - b + wd * theta  # inner gradient with weight decay folded in
    # its Jacobian d g / d theta; the authors' theta' adds wd * (detached copy of theta)
    G = A + (wd if outer == "full" else 0.0) * torch.eye(3, dtype=torch.float64)
    if inner_optimizer == "sgd":
        step, dstep = alpha * g, alpha * torch.eye(3, dtype=torch.float64)
    else:  # fresh Adam: g / (R + eps) with R = sqrt(g^2 + sq / (1 - b2)) (= |g| for sq = 0)
        R = torch.sqrt(g**2 + sq / (1 - 0.999))
        step = alpha * g / (R + eps)
        dstep = alpha * torch.diag((sq / (1 - 0.999) + eps * R) / (R * (R + eps) ** 2))
    theta_p = theta - step
    r = theta_p - model.c[t]  # d L_mte / d theta'
    # full: d theta'/d theta = I - dstep G, so L_mte gives r - G dstep r; authors: theta' is
    # built on a detached copy, d theta'/d theta = -dstep G, only the second-order term.
    first = A @ theta - b + (r if outer == "full" or first_order else 0.0)
    second_term = -G @ dstep @ r  # the Hessian-vector part
    return cap.grads[0][0], first, second_term


@pytest.mark.parametrize("outer", ["full", "authors"])
@pytest.mark.parametrize("inner,sq", [("sgd", 0.0), ("adam", 0.0), ("adam", 1e-3)])
def test_second_order_terms_reach_theta(inner, sq, outer):
    grad, first, second_term = _quadratic_step(inner, sq=sq, outer=outer)
    assert second_term.norm() > 0.01  # the Hessian-vector term is not negligible here
    torch.testing.assert_close(grad, first + second_term, rtol=1e-10, atol=1e-12)
    # a first-order implementation would give ``first`` and fail the assertion above
    assert (grad - first).norm() > 0.01
    # ... which is exactly what the FIRST_ORDER switch computes
    grad_fo, first_fo, _ = _quadratic_step(inner, first_order=True, sq=sq, outer=outer)
    torch.testing.assert_close(grad_fo, first_fo, rtol=1e-10, atol=1e-12)


def test_authors_outer_gradient_drops_exactly_the_first_order_term_of_l_mte():
    """OUTER_GRADIENT authors on the quadratic model (exact-Adam inner step, wd 0.1) equals
    the gradient of L_mtr(theta) + L_mte(sg(theta) - alpha * Adam(g(theta) + wd sg(theta))),
    restated in closed form and differentiated by torch.func and by finite differences."""
    alpha, eps, wd = 0.3, 0.5, 0.1
    g_full, _, _ = _quadratic_step("adam", wd=wd, alpha=alpha, eps=eps, outer="full")
    g_auth, first_auth, second_auth = _quadratic_step(
        "adam", wd=wd, alpha=alpha, eps=eps, outer="authors"
    )
    # independent restatement: L_mte(theta') with theta' = sg(theta) - alpha * Adam(g(theta))
    # differentiated by torch.func on the closed form of the quadratic model
    model = Quadratic()
    t = choose_meta_test_domain(DOMAINS, 4, 0)
    others = [d for d in range(DOMAINS) if d != t]
    A, b, c = model.A[others].mean(0), model.b[others].mean(0), model.c[t]
    theta0 = model.theta.detach()

    def meta_objective(theta):
        g = A @ theta - b + wd * theta0  # weight decay on the detached copy
        theta_p = theta0 - alpha * g / (g.abs() + eps)
        return 0.5 * theta @ A @ theta - b @ theta + 0.5 * (theta_p - c).pow(2).sum()

    expected = torch.func.grad(meta_objective)(theta0)
    torch.testing.assert_close(g_auth, expected, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_auth, first_auth + second_auth, rtol=1e-10, atol=1e-12)
    # finite differences of the same objective agree too
    h = 1e-6
    fd = torch.stack(
        [
            (meta_objective(theta0 + h * e) - meta_objective(theta0 - h * e)) / (2 * h)
            for e in torch.eye(3, dtype=torch.float64)
        ]
    )
    torch.testing.assert_close(g_auth, fd, rtol=1e-6, atol=1e-8)
    assert (g_full - g_auth).norm() > 0.1  # the switch changes the gradient


class SmoothBackbone(nn.Module):
    """conv-BN-tanh x 2: a smooth stand-in for the ResNet (no ReLU / max-pool kinks)."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.Tanh(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, x):
        return {"res5": self.body(x)}


def test_meta_gradient_of_m3l_matches_finite_differences():
    """Directional derivative of L_mtr(theta) + L_mte(theta'(theta)) on a float64 M3L."""
    torch.manual_seed(0)
    cfg = tiny_cfg()
    model = M3L(
        backbone=SmoothBackbone(),
        head=MetaBNHead(feat_dim=16),
        pixel_mean=cfg.MODEL.PIXEL_MEAN,
        pixel_std=cfg.MODEL.PIXEL_STD,
        classifier="fc_parallel",
        triplet_loss=TripletLoss(),
        ce_loss=CrossEntropyLoss(epsilon=0.1),
        num_pids_per_domain=[IDS] * DOMAINS,
    )
    model.double().train()
    bn = model.head.bottleneck  # fixed MetaBN draws (z is a sample: no gradient to theta)
    z = torch.randn(6, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    bn.lam_sampler = lambda: 0.4
    bn.z_sampler = lambda m, s, n: z[:n]
    data = [batch(d) for d in range(DOMAINS)]
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    tr = MetaStepTrainer(
        model,
        iter(lambda: data, None),
        opt,
        inner_optimizer="sgd",
        inner_lr=0.5,
        base_lr=1.0,
        inner_lr_follows_schedule=False,
        memory_update="batch",
        outer_gradient="full",  # the derivative of the objective evaluated below
        seed=1,
    )
    names, params = tr.trainable()
    totals, cap = [], GradCapture(params)
    tr.register_hooks([cap])
    orig = tr.sum_losses
    tr.sum_losses = lambda d: totals.append(orig(d)) or totals[-1]
    state = copy.deepcopy(model.state_dict())

    def objective(values):
        model.load_state_dict({**state, **values})  # same buffers for every evaluation
        with EventStorage(0):
            tr.run_step()
        return totals[-1].item()

    base = {n: p.detach().clone() for n, p in zip(names, params)}
    objective(base)
    grad = cap.grads[-1]
    g = torch.Generator().manual_seed(9)
    v = [torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
    h = 1e-5
    plus = objective({n: base[n] + h * vi for n, vi in zip(names, v)})
    minus = objective({n: base[n] - h * vi for n, vi in zip(names, v)})
    numeric = (plus - minus) / (2 * h)
    analytic = sum((gi * vi).sum() for gi, vi in zip(grad, v)).item()
    assert numeric == pytest.approx(analytic, rel=1e-5, abs=1e-7)
    # the first-order gradient misses a visible part of it
    tr.first_order = True
    objective(base)
    first = sum((gi * vi).sum() for gi, vi in zip(cap.grads[-1], v)).item()
    assert abs(first - numeric) > 100 * abs(analytic - numeric) + 1e-6
    grad_fo = cap.grads[-1]  # dL_mtr/dtheta + dL_mte/dtheta' at theta'
    # OUTER_GRADIENT authors = full minus exactly the first-order term dL_mte/dtheta'
    tr.first_order, tr.outer_gradient = False, "authors"
    objective(base)
    grad_authors = cap.grads[-1]
    t = tr.last_meta_test_domain
    l_mtr = sum(model([data[d] for d in range(DOMAINS) if d != t], stage="meta_train").values())
    g_mtr = torch.autograd.grad(l_mtr, params, allow_unused=True)
    for ga, gf, gfo, gm in zip(grad_authors, grad, grad_fo, g_mtr):
        # parameters L_mtr does not use (the meta-test domain's classifier) keep theta itself
        expected = gf if gm is None else gf - (gfo - gm)
        torch.testing.assert_close(ga, expected, rtol=1e-7, atol=1e-10)
    diff = sum(((ga - gf) ** 2).sum() for ga, gf in zip(grad_authors, grad)) ** 0.5
    assert diff > 1e-3


def test_exact_adam_keeps_second_order_graph_finite_for_zero_gradients():
    p = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64, requires_grad=True)
    mask = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)  # middle gradient is exactly 0
    loss = (mask * p**3).sum()
    (g,) = torch.autograd.grad(loss, [p], create_graph=True)
    (new,) = fresh_adam_step([p], [g], lrs=[0.1], weight_decays=[0.0], eps=1e-8)
    (grad,) = torch.autograd.grad((new**2).sum(), [p])
    assert torch.isfinite(grad).all()
    # the naive sqrt would give inf * 0 = NaN on the zero entry
    (g2,) = torch.autograd.grad(loss, [p], create_graph=True)
    naive = p - 0.1 * g2 / (torch.sqrt(g2 * g2) + 1e-8)
    (grad_naive,) = torch.autograd.grad((naive**2).sum(), [p])
    assert torch.isnan(grad_naive[1])
    torch.testing.assert_close(grad[[0, 2]], grad_naive[[0, 2]])


# ----------------------------------------------------------------------------- inner step
def test_inner_adam_step_equals_torch_adam_on_a_copy():
    cfg = tiny_cfg()
    cfg.SOLVER.BASE_LR = 3.5e-4
    cfg.SOLVER.WEIGHT_DECAY = 5e-4
    cfg.SOLVER.WEIGHT_DECAY_NORM = 2e-3  # different weight decay for norm layers
    cfg.SOLVER.BIAS_LR_FACTOR = 2.0  # and a different lr for biases
    model = tiny_m3l()
    model.train()
    opt = build_optimizer(cfg, model)
    for group in opt.param_groups:  # as during warm-up: half the base LR
        group["lr"] *= 0.5
    # exact Adam (the default adds the authors' 1e-8 to the second moment)
    tr = MetaStepTrainer(
        model, stream(), opt, inner_lr=1e-3, base_lr=cfg.SOLVER.BASE_LR, inner_sq_eps=0.0
    )
    names, params = tr.trainable()
    loss = sum(model([batch(0), batch(1)], stage="meta_train", update_memory=False).values())
    grads = torch.autograd.grad(loss, params, retain_graph=True)
    new = tr.inner_update(loss, names, params)
    assert all(new[n].requires_grad and new[n].grad_fn is not None for n in names)

    copies, groups = {}, []
    index = {id(p): i for i, p in enumerate(params)}
    for group in opt.param_groups:
        for p in group["params"]:
            c = p.detach().clone().requires_grad_(True)
            c.grad = grads[index[id(p)]].clone()
            copies[id(p)] = c
            groups.append(
                {
                    "params": [c],
                    "lr": 1e-3 * group["lr"] / 3.5e-4,
                    "weight_decay": group["weight_decay"],
                }
            )
    torch.optim.Adam(groups, betas=(0.9, 0.999), eps=1e-8).step()  # fresh state: one step
    wds = {g["weight_decay"] for g in opt.param_groups}
    assert wds == {5e-4, 2e-3}
    for n, p in zip(names, params):
        torch.testing.assert_close(new[n].detach(), copies[id(p)].detach(), rtol=1e-5, atol=1e-7)
        assert not torch.equal(new[n].detach(), p.detach())


# ----------------------------------------------------------------------------- iterations
def test_meta_test_domain_rotates_and_is_reproducible():
    seq = [choose_meta_test_domain(3, 0, i) for i in range(40)]
    assert set(seq) == {0, 1, 2}
    assert seq == [choose_meta_test_domain(3, 0, i) for i in range(40)]
    assert seq != [choose_meta_test_domain(3, 1, i) for i in range(40)]
    model = Quadratic()
    data = [[{"domain": d}] for d in range(DOMAINS)]
    tr = MetaStepTrainer(
        model, iter(lambda: data, None), torch.optim.SGD(model.parameters(), lr=0.0), seed=0
    )
    chosen = []
    with EventStorage(0) as storage:
        for i in range(12):
            tr.iter = storage.iter = i
            tr.run_step()
            chosen.append(tr.last_meta_test_domain)
    assert chosen == seq[:12] and set(chosen) == {0, 1, 2}


def test_one_meta_iteration_on_tiny_data():
    model = tiny_m3l()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = build_optimizer(tiny_cfg(), model)
    tr = MetaStepTrainer(model, stream(), opt, memory_update="forward", seed=0)
    with EventStorage(0) as storage:
        tr.run_step()
        hist = storage.histories()
    keys = {"loss_mtr_triplet", "loss_mtr_memory", "loss_mte_triplet", "loss_mte_memory"}
    assert keys <= set(hist)
    assert all(np.isfinite(hist[k].latest()) for k in keys | {"total_loss", "grad_norm"})
    assert hist["meta_test_domain"].latest() == tr.last_meta_test_domain
    after = model.state_dict()
    t = tr.last_meta_test_domain
    for d in range(DOMAINS):  # every memory updated after the step (forward mode)
        assert not torch.equal(after[f"memory_loss.memory_{d}"], before[f"memory_loss.memory_{d}"])
    assert not torch.equal(after["head.bottleneck.weight"], before["head.bottleneck.weight"])
    # neck running stats: only the meta-train domains' plain BN passes (momentum 0.1 each)
    assert int(after["head.bottleneck.num_batches_tracked"]) == DOMAINS - 1
    assert t in range(DOMAINS)


def test_meta_learning_requires_two_domains():
    model = tiny_m3l()
    model.train()
    opt = build_optimizer(tiny_cfg(), model)
    with EventStorage(0):
        with pytest.raises(ValueError, match=">= 2 source domains"):
            MetaStepTrainer(model, stream(1), opt).run_step()
        with pytest.raises(ValueError, match="MULTI_SOURCE"):
            MetaStepTrainer(model, iter(lambda: batch(0), None), opt).run_step()


def test_meta_learning_off_is_the_baseline_step():
    m3l = tiny_m3l()
    base = baseline_twin(m3l)
    cfg = tiny_cfg()
    tr_m = MetaStepTrainer(
        m3l, stream(), build_optimizer(cfg, m3l), meta_learning=False, memory_update="batch"
    )
    tr_b = SimpleTrainer(base, stream(), build_optimizer(cfg, base))
    with EventStorage(0):
        for _ in range(2):
            tr_m.run_step()
            tr_b.run_step()
    sd_b = base.state_dict()
    for k, v in m3l.state_dict().items():
        torch.testing.assert_close(v, sd_b[k], rtol=1e-5, atol=1e-6, msg=k)


# ----------------------------------------------------------------------------- resume
def _register_tiny_sets(root):
    names = []
    for d in range(2):
        name = f"m3l_resume{d}_{uuid.uuid4().hex[:6]}"
        recs = []
        for i in range(8):
            path = os.path.join(root, f"{d}_{i}.png")
            img = np.random.default_rng(10 * d + i).integers(0, 256, (32, 16, 3), dtype=np.uint8)
            cv2.imwrite(path, img)
            recs.append({"file_name": path, "pid": i % 4, "camid": i % 2, "dataset": name})
        DatasetCatalog.register(name, lambda recs=recs: [dict(r) for r in recs])
        names.append(name)
    return names


class _Stream:
    """Resumable stream of 2 domain batches (2 ids x 2 images): batch k depends only on k."""

    num_pids_per_domain = [4, 4]  # what the trainer passes to build_model

    def __init__(self):
        self.start = 0

    def set_start_iter(self, k):
        self.start = k

    @staticmethod
    def batch(d, k):
        g = torch.Generator().manual_seed(1000 * d + k)
        ids = [i % 2 + 2 * (k % 2) for i in range(4)]
        return [
            {
                "image": torch.rand(3, 32, 16, generator=g) * 255,
                "pid": 4 * d + j,
                "domain_pid": j,
                "domain": d,
            }
            for j in ids
        ]

    def __iter__(self):
        k = self.start
        while True:
            yield [self.batch(d, k) for d in range(2)]
            k += 1


class _Trainer(MetaTrainer):
    @classmethod
    def build_train_loader(cls, cfg):
        return _Stream()


class _Crash(HookBase):
    def after_step(self):  # runs after the checkpointer hook has saved model_0000001
        if self.trainer.iter == 1:
            raise KeyboardInterrupt("simulated crash")


def test_resume_restores_memories_and_reproduces_the_run(tmp_path):
    names = _register_tiny_sets(str(tmp_path))
    try:

        def cfg_for(out):
            cfg = tiny_cfg()
            cfg.merge_from_list(
                [
                    "MODEL.META_ARCHITECTURE",
                    "M3L",
                    "MODEL.HEADS.NAME",
                    "MetaBNHead",
                    "MODEL.HEADS.CLS_LAYER",
                    "none",
                    "TRAINER.NAME",
                    "MetaTrainer",
                    "DATALOADER.MULTI_SOURCE",
                    "True",
                    "DATALOADER.NUM_WORKERS",
                    "0",
                    "INPUT.SIZE_TEST",
                    "[32, 16]",
                    "SOLVER.MAX_ITER",
                    "3",
                    "SOLVER.STEPS",
                    "[]",
                    "SOLVER.WARMUP_ITERS",
                    "0",
                    "SOLVER.CHECKPOINT_PERIOD",
                    "1",
                    "SOLVER.IMS_PER_BATCH",
                    "4",
                    "SEED",
                    "3",
                    "LOG_PERIOD",
                    "100",
                ]
            )
            cfg.DATASETS.TRAIN = names
            cfg.OUTPUT_DIR = str(out)
            return cfg

        def run(out, crash=False, resume=False):
            torch.manual_seed(0)
            tr = _Trainer(cfg_for(out))
            if crash:
                tr.register_hooks([_Crash()])
            tr.resume_or_load(resume=resume)
            return tr

        full = run(tmp_path / "full")
        step = full._trainer  # MODEL.M3L keys reach the step trainer
        assert isinstance(step, MetaStepTrainer) and step.meta_learning and step.seed == 3
        assert (step.inner_optimizer, step.memory_update, step.first_order) == (
            "adam",
            "forward",
            False,
        )
        assert step.inner_lr == pytest.approx(3.5e-4) and step.inner_lr_follows_schedule
        full.train()
        ref = {k: v.clone() for k, v in full.model_without_ddp.state_dict().items()}

        with pytest.raises(KeyboardInterrupt):
            run(tmp_path / "crash", crash=True).train()
        resumed = run(tmp_path / "crash", resume=True)
        assert resumed.start_iter == 2
        ckpt = torch.load(tmp_path / "crash" / "model_0000001.pth", weights_only=False)["model"]
        saved = torch.load(tmp_path / "crash" / "model_0000000.pth", weights_only=False)
        assert saved["trainer"]["meta_test_seed"] == 3  # cfg.SEED
        first = saved["model"]
        assert not torch.equal(first["memory_loss.memory_0"], ckpt["memory_loss.memory_0"])
        model = resumed.model_without_ddp
        for d in range(2):
            torch.testing.assert_close(
                model.memory_loss.get_memory(d), ckpt[f"memory_loss.memory_{d}"]
            )
            assert model.memory_loss.is_initialized(d)
        resumed.train()
        for k, v in model.state_dict().items():
            torch.testing.assert_close(v, ref[k], rtol=1e-6, atol=1e-7, msg=k)
    finally:
        for name in names:
            DatasetCatalog.remove(name)
            MetadataCatalog.remove(name)
