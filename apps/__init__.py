"""Runnable Gradio demos over anymodal's public API (`anymodal app NAME`):

    assistant        chat with image / audio / video attachments; answers streamed with media inline
    speech           speech in, spoken answer out (chain-of-modality; needs a bundle with speech units)
    retrieval_chat   index a folder of images, then chat with answers that bring images back from it

Each module exposes ``build(model, settings, **options) -> gradio.Blocks``.
"""

APPS = ["assistant", "speech", "retrieval_chat"]
