"""glmtune: fine-tune GLM-family chat models (ChatGLM3-6B, GLM-4-9B-chat) on your own data."""

__version__ = "0.1.0"

import logging as _logging

# bitsandbytes (the qlora extra) logs at import, on any CPU with AVX512-BF16, that an optional CPU 4-bit kernel
# package is missing; peft imports it wherever it is installed, so the line would top every log. glmtune runs
# 4-bit layers on a GPU only (train.method: qlora is refused without one), and where 4-bit layers do run on a CPU
# (tests, bench-train --tiny) bitsandbytes' own fallback serves.
_logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(_logging.ERROR)
