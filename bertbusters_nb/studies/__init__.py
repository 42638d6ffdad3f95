"""Studies (layer 6): one orchestration module per notebook that needs one (04 downstream, 06 across models, 07 why)."""
