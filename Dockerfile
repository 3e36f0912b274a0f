# recallseg on CUDA: docker build -t recallseg . && docker run --gpus all recallseg
# Mount datasets at /workspace/recallseg/data and outputs at /workspace/recallseg/outputs.
FROM pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime

WORKDIR /workspace/recallseg
COPY pyproject.toml README.md ./
COPY recallseg ./recallseg
COPY configs ./configs
COPY scripts ./scripts
COPY train.py evaluate.py ./
# The base image's torch satisfies the requirement, so pip keeps it and adds the rest.
RUN pip install --no-cache-dir -e .

ENTRYPOINT ["python", "train.py"]
CMD ["loss=recall"]
