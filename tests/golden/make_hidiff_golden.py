#!/usr/bin/env python
"""Regenerate the HI-Diff golden test data by running the OFFICIAL HI-Diff code.

Usage (from the repository root)::

    python tests/golden/make_hidiff_golden.py --official /path/to/HI-Diff [--out tests/data]

``--official`` is a checkout of https://github.com/zhengchen1999/HI-Diff .
No official code lives in this repository: the official modules are imported,
unmodified, from that path.  They import ``basicsr`` (which drags in
torchvision / cv2); instead of installing it, a minimal in-memory stub of the
few ``basicsr`` names they use is inserted into ``sys.modules`` below.  The
top-level ``hi_diff/__init__.py`` (which imports the dataset code -> cv2 /
torchvision) is bypassed by registering a bare ``hi_diff`` package object;
``hi_diff.archs`` / ``hi_diff.models`` / ``hi_diff.utils`` and ``ldm`` are
imported normally (their own ``__init__`` code runs).

The official test procedure is what runs: the model object is built with the
official ``hi_diff.models.build_model`` (-> ``HI_Diff_S2(opt)``), ``model.lq``
is set, ``torch.manual_seed(seed)`` is called and ``model.test()`` produces
``model.output``.  Forward pre-hooks record what the official code fed to
``net_g`` (the prior) and to ``net_d`` (initial noise, condition, time input).

Outputs (under ``--out``, default ``tests/data``):

* ``hidiff_tiny/{net_g,net_le_dm,net_d,net_le}.pth``: tiny GoPro-type model,
  default PyTorch init after ``torch.manual_seed(0)``, official release
  layout ``{'params': state_dict}``.
* ``hidiff_tiny_realblur/...``: same for the RealBlur-type model
  (latent_encoder_lrelu + simple_denoise + ldm DDPM).
* ``hidiff_golden.pt``: golden inputs / seeds / priors / outputs
  (loadable with ``torch.load(..., weights_only=True)``).
* ``hidiff_shapes.json``: key->shape manifests of the full official GoPro and
  RealBlur_J configurations (used with ``tests/random_weights.py``).

Everything runs in fp32 on CPU with one thread; the script is deterministic
(running it twice gives byte-identical files).
"""

import argparse
import copy
import importlib.util
import json
import logging
import os
import subprocess
import sys
import types
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT_REL = 'tests/golden/make_hidiff_golden.py'


def _load_random_weights():
    spec = importlib.util.spec_from_file_location(
        '_hidiff_random_weights', REPO_ROOT / 'tests' / 'random_weights.py')
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


random_weights = _load_random_weights()


# ---------------------------------------------------------------------------
# minimal in-memory basicsr stub (only the names the official modules import)
# ---------------------------------------------------------------------------
class _Registry:
    """Name -> object registry with a ``register()`` decorator (basicsr API)."""

    def __init__(self, name):
        self._name = name
        self._obj_map = {}

    def _do_register(self, name, obj):
        if name in self._obj_map:
            raise KeyError(f"'{name}' already registered in '{self._name}' registry")
        self._obj_map[name] = obj

    def register(self, obj=None):
        if obj is None:
            def deco(func_or_class):
                self._do_register(func_or_class.__name__, func_or_class)
                return func_or_class
            return deco
        self._do_register(obj.__name__, obj)
        return obj

    def get(self, name):
        if name not in self._obj_map:
            raise KeyError(f"No object named '{name}' found in '{self._name}' registry!")
        return self._obj_map[name]

    def __contains__(self, name):
        return name in self._obj_map

    def keys(self):
        return self._obj_map.keys()


def _install_basicsr_stub():
    def module(name):
        m = types.ModuleType(name)
        m.__path__ = []  # make it a package so submodules resolve from sys.modules
        sys.modules[name] = m
        return m

    basicsr = module('basicsr')
    registry = module('basicsr.utils.registry')
    registry.ARCH_REGISTRY = _Registry('arch')
    registry.MODEL_REGISTRY = _Registry('model')
    registry.DATASET_REGISTRY = _Registry('dataset')
    registry.LOSS_REGISTRY = _Registry('loss')
    registry.METRIC_REGISTRY = _Registry('metric')

    def get_root_logger(logger_name='basicsr', log_level=logging.INFO, log_file=None):
        logger = logging.getLogger(logger_name)
        logger.setLevel(logging.WARNING)  # keep the network dumps quiet
        return logger

    def scandir(dir_path, suffix=None, recursive=False, full_path=False):
        names = sorted(e.name for e in os.scandir(dir_path) if e.is_file())
        for n in names:
            if suffix is None or n.endswith(suffix):
                yield os.path.join(dir_path, n) if full_path else n

    def _unavailable(name):
        def f(*args, **kwargs):
            raise NotImplementedError(f'basicsr stub: {name} is not available')
        f.__name__ = name
        return f

    dist_util = module('basicsr.utils.dist_util')

    def master_only(func):
        return func  # single process: rank 0

    dist_util.master_only = master_only
    dist_util.get_dist_info = lambda: (0, 1)
    dist_util.init_dist = _unavailable('init_dist')

    utils = module('basicsr.utils')
    utils.registry = registry
    utils.dist_util = dist_util
    utils.get_root_logger = get_root_logger
    utils.scandir = scandir
    utils.imwrite = _unavailable('imwrite')
    utils.tensor2img = _unavailable('tensor2img')
    utils.img2tensor = _unavailable('img2tensor')
    utils.imfrombytes = _unavailable('imfrombytes')
    utils.FileClient = _unavailable('FileClient')
    utils.set_random_seed = _unavailable('set_random_seed')

    archs = module('basicsr.archs')

    def build_network(opt):
        opt = copy.deepcopy(opt)
        network_type = opt.pop('type')
        return registry.ARCH_REGISTRY.get(network_type)(**opt)

    archs.build_network = build_network

    losses = module('basicsr.losses')
    losses.build_loss = _unavailable('build_loss')
    metrics = module('basicsr.metrics')
    metrics.calculate_metric = _unavailable('calculate_metric')

    basicsr.utils = utils
    basicsr.archs = archs
    basicsr.losses = losses
    basicsr.metrics = metrics


def import_official(official):
    official = str(Path(official).resolve())
    if not os.path.isfile(os.path.join(official, 'hi_diff', 'models', 'HI_Diff_S2_model.py')):
        raise SystemExit(f'{official} does not look like an HI-Diff checkout')
    _install_basicsr_stub()
    sys.path.insert(0, official)
    # bare 'hi_diff' package: skips hi_diff/__init__.py (dataset code needs cv2/torchvision)
    pkg = types.ModuleType('hi_diff')
    pkg.__path__ = [os.path.join(official, 'hi_diff')]
    pkg.__file__ = os.path.join(official, 'hi_diff', '__init__.py')
    sys.modules['hi_diff'] = pkg
    import hi_diff.archs  # noqa: F401  (official __init__: registers all *_arch.py)
    import hi_diff.models  # noqa: F401  (official __init__: registers all *_model.py)
    import ldm.ddpm  # noqa: F401
    return sys.modules['hi_diff.models'], official


def official_commit(official):
    try:
        return subprocess.check_output(['git', '-C', official, 'rev-parse', 'HEAD'],
                                       text=True, stderr=subprocess.DEVNULL).strip()
    except Exception:  # pragma: no cover
        return 'unknown'


# ---------------------------------------------------------------------------
# configurations
# ---------------------------------------------------------------------------
NETS = ('net_g', 'net_le_dm', 'net_d', 'net_le')

TINY_GOPRO = {
    'network_g': dict(type='Transformer', inp_channels=3, out_channels=3, dim=8,
                      num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4],
                      ffn_expansion_factor=2.66, bias=False, LayerNorm_type='WithBias',
                      dual_pixel_task=False, embed_dim=8, group=4),
    'network_le': dict(type='latent_encoder_gelu', in_chans=6, embed_dim=8, block_num=1, group=4,
                       stage=1, patch_expansion=0.5, channel_expansion=4),
    'network_le_dm': dict(type='latent_encoder_gelu', in_chans=3, embed_dim=8, block_num=1, group=4,
                          stage=2, patch_expansion=0.5, channel_expansion=4),
    'network_d': dict(type='denoising', in_channel=32, out_channel=32, inner_channel=16, block_num=4,
                      group=4, patch_expansion=0.5, channel_expansion=2),
    'diffusion_schedule': dict(apply_ldm=False, schedule='linear', timesteps=8,
                               linear_start=0.1, linear_end=0.99),
}

# NOTE simple_denoise: the official RealBlur_J.yml does NOT pass `timesteps` to
# simple_denoise, so the real model runs with the constructor default
# timesteps=5 -> max_period = 50 (time input t/50).  The tiny config keeps that
# (no `timesteps` key) so the tiny data exercises the real convention.
TINY_REALBLUR = {
    'network_g': dict(type='Transformer', inp_channels=3, out_channels=3, dim=8,
                      num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 2, 2, 4],
                      ffn_expansion_factor=2, bias=False, LayerNorm_type='WithBias',
                      dual_pixel_task=False, embed_dim=8, group=4),
    'network_le': dict(type='latent_encoder_lrelu', in_chans=6, embed_dim=8, block_num=1, group=4,
                       stage=1, patch_expansion=0.5, channel_expansion=4),
    'network_le_dm': dict(type='latent_encoder_lrelu', in_chans=3, embed_dim=8, block_num=1, group=4,
                          stage=2, patch_expansion=0.5, channel_expansion=4),
    'network_d': dict(type='simple_denoise', n_feats=8, n_denoise_res=2),
    'diffusion_schedule': dict(apply_ldm=True, schedule='linear', timesteps=16,
                               linear_start=0.1, linear_end=0.99),
}

TINY_CASES = [  # (B, H, W, seed)
    (1, 37, 45, 0),
    (2, 24, 32, 7),
    (1, 16, 21, 123),
]


def yml_config(official, name):
    import yaml
    with open(os.path.join(official, 'options', 'test', name)) as f:
        y = yaml.safe_load(f)
    return {k: y[k] for k in ('network_g', 'network_le', 'network_le_dm', 'network_d',
                              'diffusion_schedule')}


def make_opt(cfg, name, pretrain_dir=None):
    opt = copy.deepcopy(cfg)
    opt.update({'name': name, 'model_type': 'HI_Diff_S2', 'scale': 1, 'num_gpu': 0,
                'is_train': False, 'dist': False, 'rank': 0, 'world_size': 1, 'path': {}})
    if pretrain_dir is not None:
        for net in NETS:
            short = net[len('net_'):]
            opt['path'][f'pretrain_network_{short}'] = str(Path(pretrain_dir) / f'{net}.pth')
            opt['path'][f'param_key_{short}'] = 'params'
            opt['path'][f'strict_load_{short}'] = True
    return opt


def build(models_mod, opt):
    return models_mod.build_model(opt)  # official: MODEL_REGISTRY.get('HI_Diff_S2')(opt)


def state_dicts(model):
    return {net: {k: v.detach().clone().contiguous() for k, v in getattr(model, net).state_dict().items()}
            for net in NETS}


def make_input(b, h, w, input_seed):
    g = torch.Generator(device='cpu')
    g.manual_seed(input_seed)
    return torch.rand((b, 3, h, w), generator=g, dtype=torch.float32)


# ---------------------------------------------------------------------------
# running the official test()
# ---------------------------------------------------------------------------
def run_official_test(model, x, seed):
    rec = {'g': [], 'd': []}

    def g_hook(module, args, kwargs):
        prior = args[1] if len(args) > 1 else kwargs['prior']
        rec['g'].append((args[0].detach().clone(), prior.detach().clone()))

    def d_hook(module, args, kwargs):
        rec['d'].append(tuple(a.detach().clone() for a in args))

    hg = model.net_g.register_forward_pre_hook(g_hook, with_kwargs=True)
    hd = model.net_d.register_forward_pre_hook(d_hook, with_kwargs=True)
    try:
        model.lq = x.clone()
        torch.manual_seed(seed)
        model.test()  # OFFICIAL test procedure (pad, diffusion prior, net_g, crop)
        out = model.output.detach().clone().float().contiguous()
    finally:
        hg.remove()
        hd.remove()
    assert len(rec['g']) == 1, rec['g']
    img, prior = rec['g'][0]
    noise = rec['d'][0][0]
    cond = rec['d'][0][1]
    times = [a[2] for a in rec['d']]
    # the initial diffusion noise is the FIRST torch.randn after manual_seed(seed)
    torch.manual_seed(seed)
    expected_noise = torch.randn(noise.shape)
    assert torch.equal(noise, expected_noise), 'initial noise is not the first randn after manual_seed'
    # every net_d call gets the same condition tensor
    for a in rec['d']:
        assert torch.equal(a[1], cond)
    assert torch.isfinite(out).all() and torch.isfinite(prior).all()
    case = {
        'input': x.clone(),
        'seed': int(seed),
        'prior': prior.float().contiguous(),
        'output': out,
        # extra (for debugging a re-implementation)
        'noise': noise.float().contiguous(),       # x_T fed to the first net_d call
        'condition': cond.float().contiguous(),    # net_le_dm(padded input)
        'padded_hw': [int(img.shape[-2]), int(img.shape[-1])],
    }
    time_info = {
        'shape_after_batch': [int(s) for s in times[0].shape[1:]],  # dim 0 is the batch
        'dtype': str(times[0].dtype),
        'values': [int(t.flatten()[0]) for t in times],
    }
    for t in times:
        assert (t == t.flatten()[0]).all()
    return case, time_info


def schedule_of(model):
    if model.apply_ldm:
        src = model.diffusion
        names = ('betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'posterior_mean_coef1',
                 'posterior_mean_coef2')
    else:
        src = model
        names = ('betas', 'alphas_cumprod', 'alphas_cumprod_prev', 'sqrt_recip_alphas_cumprod',
                 'sqrt_recipm1_alphas_cumprod', 'posterior_mean_coef1', 'posterior_mean_coef2')
    return {n: getattr(src, n).detach().clone().float() for n in names}


def save_release(sds, folder):
    folder.mkdir(parents=True, exist_ok=True)
    for net in NETS:
        torch.save({'params': sds[net]}, folder / f'{net}.pth')


def run_tiny(models_mod, cfg, name, folder, input_seed_base):
    torch.manual_seed(0)
    model = build(models_mod, make_opt(cfg, name))  # default PyTorch init
    sds = state_dicts(model)
    save_release(sds, folder)
    # reload through the OFFICIAL load_network path (pretrain_network_* + 'params')
    model = build(models_mod, make_opt(cfg, name, pretrain_dir=folder))
    for net in NETS:
        for k, v in getattr(model, net).state_dict().items():
            assert torch.equal(v, sds[net][k]), (net, k)
    cases, tinfo = [], None
    for i, (b, h, w, seed) in enumerate(TINY_CASES):
        input_seed = input_seed_base + i
        case, tinfo = run_official_test(model, make_input(b, h, w, input_seed), seed)
        case['input_seed'] = input_seed
        cases.append(case)
    return cases, schedule_of(model), tinfo


def run_random(models_mod, cfg, name, weight_seed, shape_bhw, seed, input_seed):
    torch.manual_seed(0)
    model = build(models_mod, make_opt(cfg, name))
    shapes = {net: random_weights.shapes_of(getattr(model, net).state_dict()) for net in NETS}
    for net in NETS:
        sd = random_weights.random_state_dict(shapes[net], seed=weight_seed)
        getattr(model, net).load_state_dict(sd, strict=True)
    b, h, w = shape_bhw
    case, tinfo = run_official_test(model, make_input(b, h, w, input_seed), seed)
    case['input_seed'] = input_seed
    case['weight_seed'] = int(weight_seed)
    return case, shapes, schedule_of(model), tinfo


def write_shapes_json(path, manifests):
    """JSON with one state-dict key per line (state_dict order)."""
    lines = ['{']
    for ci, (cfg, nets) in enumerate(manifests.items()):
        lines.append(f' {json.dumps(cfg)}: {{')
        for ni, (net, shapes) in enumerate(nets.items()):
            lines.append(f'  {json.dumps(net)}: {{')
            items = list(shapes.items())
            for ki, (k, shape) in enumerate(items):
                lines.append(f'   {json.dumps(k)}: {json.dumps(shape)}' + (',' if ki < len(items) - 1 else ''))
            lines.append('  }' + (',' if ni < len(nets) - 1 else ''))
        lines.append(' }' + (',' if ci < len(manifests) - 1 else ''))
    lines.append('}')
    text = '\n'.join(lines) + '\n'
    assert json.loads(text) == manifests
    with open(path, 'w') as f:
        f.write(text)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--official', required=True, help='path to an HI-Diff checkout')
    ap.add_argument('--out', default=str(REPO_ROOT / 'tests' / 'data'), help='output folder')
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)

    models_mod, official = import_official(args.official)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    gopro_cfg = yml_config(official, 'GoPro.yml')
    realblur_cfg = yml_config(official, 'RealBlur_J.yml')

    with torch.no_grad():
        tiny, tiny_sched, tiny_t = run_tiny(models_mod, TINY_GOPRO, 'tiny', out / 'hidiff_tiny', 1000)
        tiny_rb, tiny_rb_sched, tiny_rb_t = run_tiny(models_mod, TINY_REALBLUR, 'tiny_realblur',
                                                     out / 'hidiff_tiny_realblur', 2000)
        gopro, gopro_shapes, gopro_sched, gopro_t = run_random(
            models_mod, gopro_cfg, 'gopro_random', 2024, (1, 29, 35), 100, 3000)
        realblur, realblur_shapes, realblur_sched, realblur_t = run_random(
            models_mod, realblur_cfg, 'realblur_random', 2025, (1, 26, 31), 5, 4000)

    golden = {
        'tiny': tiny,
        'tiny_realblur': tiny_rb,
        'gopro_random': [gopro],
        'realblur_random': [realblur],
        'meta': {
            'script': SCRIPT_REL,
            'torch': str(torch.__version__),
            'official_commit': official_commit(official),
            'configs': {
                'tiny': copy.deepcopy(TINY_GOPRO),
                'tiny_realblur': copy.deepcopy(TINY_REALBLUR),
                'gopro_random': gopro_cfg,
                'realblur_random': realblur_cfg,
            },
            # official diffusion schedules (float32 buffers as used by test())
            'schedules': {
                'tiny': tiny_sched,
                'tiny_realblur': tiny_rb_sched,
                'gopro_random': gopro_sched,
                'realblur_random': realblur_sched,
            },
            # time tensor fed to net_d at each reverse step (all entries equal)
            'net_d_time_input': {
                'tiny': tiny_t,
                'tiny_realblur': tiny_rb_t,
                'gopro_random': gopro_t,
                'realblur_random': realblur_t,
            },
            'weights': {
                'tiny': 'tests/data/hidiff_tiny/*.pth (torch.manual_seed(0), default init)',
                'tiny_realblur': 'tests/data/hidiff_tiny_realblur/*.pth (torch.manual_seed(0), default init)',
                'gopro_random': 'random_state_dict(hidiff_shapes.json[gopro][net], seed=2024) per net',
                'realblur_random': 'random_state_dict(hidiff_shapes.json[realblur][net], seed=2025) per net',
            },
        },
    }
    torch.save(golden, out / 'hidiff_golden.pt')
    write_shapes_json(out / 'hidiff_shapes.json', {'gopro': gopro_shapes, 'realblur': realblur_shapes})

    # sanity: loads with weights_only
    torch.load(out / 'hidiff_golden.pt', weights_only=True)
    for k in ('tiny', 'tiny_realblur', 'gopro_random', 'realblur_random'):
        for c in golden[k]:
            print(f"{k:16s} in={tuple(c['input'].shape)} seed={c['seed']:4d} "
                  f"prior={tuple(c['prior'].shape)} [{c['prior'].min():.4f},{c['prior'].max():.4f}] "
                  f"out=[{c['output'].min():.4f},{c['output'].max():.4f}]")


if __name__ == '__main__':
    main()
