"""LoRA training shared by the DPO and SFT stages: configs, trainer arguments, checkpoint
resume through the store, progress forwarding, and the preference-accuracy signal.

Heavy libraries (torch, transformers, trl, peft) are imported inside functions, so importing
this package stays cheap.
"""
