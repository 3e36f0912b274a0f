# recallseg on CUDA: docker build -t recallseg . && docker run --gpus all recallseg
# Mount datasets at /workspace/recallseg/data and outputs at /workspace/recallseg/outputs.
FROM pytorch/pytorch:2.8.0-cuda12.8-cudnn9-runtime

WORKDIR /workspace/recallseg
COPY pyproject.toml README.md ./
COPY recallseg ./recallseg
COPY configs ./configs
COPY scripts ./scripts
COPY train.py evaluate.py ./
# torch 2.8.0 is the oldest version the test suite has passed with (see README, "Tested versions").
# The base image's torch satisfies the requirement, so pip keeps it and adds the rest.
RUN pip install --no-cache-dir -e ".[export,cluster]"

ENTRYPOINT ["python", "train.py"]
CMD ["loss=recall"]
