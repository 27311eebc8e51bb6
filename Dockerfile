# One image for the API and the worker, built from the wheel (which carries the migrations):
#   docker run IMAGE            -> API on :8080
#   docker run IMAGE worker     -> arq worker
#   docker run IMAGE migrate    -> apply the schema migrations
# No dev code is needed at run time: the embedded servers, `dev` and the mock merchant stay off.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY groupbuy_async ./groupbuy_async
COPY sql ./sql
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    GROUPBUY_HOST=0.0.0.0 GROUPBUY_PORT=8080 GROUPBUY_LOG_FORMAT=json
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels && useradd --system --uid 10001 groupbuy
# An empty working folder: nothing here can shadow the installed package.
WORKDIR /home/groupbuy
USER groupbuy
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=6s --retries=3 CMD ["groupbuy-async", "health", "api"]
ENTRYPOINT ["groupbuy-async"]
CMD ["api"]
