"""The "Deblur" step of the Extras tab (``ScriptPostprocessing``): method, model, seed, tiling, precision."""
from __future__ import annotations

import logging

import gradio as gr

from ..models import methods
from ..models.common import runtime
from . import adapter, backend

log = logging.getLogger(__name__)



def setup() -> None:
    """Called by the entry point on every (re)load of the WebUI's scripts."""
    backend.install()
    backend.on_app_started(_register_api)


def _register_api(_demo, app) -> None:
    from . import api  # FastAPI is the WebUI's; imported only when its app starts

    api.register(app)


def _choices(method_name: str) -> list[str]:
    try:
        return methods.list_models(methods.get_method(method_name))
    except ValueError:
        return []


class DeblurExtrasStep(backend.ScriptPostprocessing):
    name = "Deblur"
    order = 900  # before upscaling: deblur at the photo's own resolution

    def ui(self):
        first = methods.METHODS[0]
        with gr.Accordion("Deblur (diffusion)", open=False, elem_id="extras_deblur"):
            enable = gr.Checkbox(False, label="Enable", elem_id="extras_deblur_enable")
            with gr.Row():
                method = gr.Dropdown(adapter.method_names(), value=first.name, label="Method", elem_id="extras_deblur_method")
                model = gr.Dropdown(_choices(first.name), value=methods.default_model(first), label="Model",
                                    allow_custom_value=False, elem_id="extras_deblur_model")
                refresh = gr.Button("\U0001f504", elem_id="extras_deblur_refresh", scale=0, min_width=40)
            with gr.Row():
                seed = gr.Number(first.default_seed, label="Seed", precision=0, minimum=0, elem_id="extras_deblur_seed")
                tile_size = gr.Slider(0, 2048, value=0, step=64, label="Tile size (0 = whole image)", elem_id="extras_deblur_tile")
                precision = gr.Radio(list(methods.PRECISIONS), value="auto", label="Precision", elem_id="extras_deblur_precision")
            note = gr.Markdown(self._note(first.name), elem_id="extras_deblur_note")

        def on_method(name):
            chosen = methods.get_method(name)
            return (gr.update(choices=_choices(name), value=methods.default_model(chosen)),
                    gr.update(value=chosen.default_seed), gr.update(value=self._note(name)))

        def on_refresh(name, current):
            names = _choices(name)
            return gr.update(choices=names, value=current if current in names else (names[0] if names else None)), gr.update(value=self._note(name))

        method.change(on_method, inputs=[method], outputs=[model, seed, note], show_progress=False)
        refresh.click(on_refresh, inputs=[method, model], outputs=[model, note], show_progress=False)
        return {"enable": enable, "method": method, "model": model, "seed": seed, "tile_size": tile_size, "precision": precision}

    @staticmethod
    def _note(method_name: str) -> str:
        chosen = methods.get_method(method_name)
        if methods.list_models(chosen):
            return ""
        return "**" + chosen.missing_weights_help() + "** Then press \U0001f504."

    def process(self, pp, enable=False, method="HI-Diff", model=None, seed=None, tile_size=0, precision="auto"):
        if not enable:
            return
        try:
            request = adapter.parse_request(method, model, seed, tile_size, precision)
        except adapter.RequestError as error:
            raise gr.Error(f"Deblur: {error}") from None
        try:
            pp.image, info = adapter.deblur_pil(pp.image, request)
        except adapter.RequestError as error:  # too large for the memory free (memory follows the tile)
            raise gr.Error(f"Deblur: {error}") from None
        except runtime.Interrupted:
            log.info("Deblur: %s; image left as it was", "skipped" if backend.shared.state.skipped else "interrupted")
            return
        pp.info.update(adapter.png_info(info))
