# One image for the API and the worker:
#   docker run IMAGE            -> API on :8080
#   docker run IMAGE worker     -> arq worker
#   docker run IMAGE migrate    -> apply sql/ migrations
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    GROUPBUY_HOST=0.0.0.0 GROUPBUY_PORT=8080 GROUPBUY_LOG_FORMAT=json
WORKDIR /app
COPY pyproject.toml README.md ./
COPY groupbuy_async ./groupbuy_async
COPY sql ./sql
RUN pip install . && useradd --system --uid 10001 groupbuy
USER groupbuy
EXPOSE 8080
ENTRYPOINT ["python", "-m", "groupbuy_async"]
CMD ["api"]
