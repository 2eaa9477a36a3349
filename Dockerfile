# Images of cluster nodes (and of a one-shot client): `attention node …` / `attention run …`.
#
#   docker build -t attention-actors .                       # builds from source in the .NET SDK image
#   docker build --target runtime-prebuilt -t attention-actors .
#                                                             # takes a self-contained build published on the host:
#                                                             #   dotnet publish src/AttentionActors.Cli -c Release -r linux-x64 --self-contained \
#                                                             #       -p:PublishReadyToRun=true -o publish
#
# Both targets share one runtime stage: the same base, non-root user, entrypoint and settings.
# Base images are arguments with public defaults, so a machine without a registry substitutes local ones.
ARG SDK_IMAGE=mcr.microsoft.com/dotnet/sdk:10.0
ARG RUNTIME_IMAGE=mcr.microsoft.com/dotnet/runtime-deps:10.0

FROM ${SDK_IMAGE} AS build
WORKDIR /src
COPY . .
# ReadyToRun: precompiled, so a node starts in about a second.
RUN dotnet publish src/AttentionActors.Cli -c Release -r linux-x64 --self-contained -p:PublishReadyToRun=true -o /app

FROM ${RUNTIME_IMAGE} AS runtime-base
# A fixed non-root user; its home is the working folder for outputs.
RUN (getent passwd attention >/dev/null || useradd --uid 10001 --create-home --home-dir /work attention)
WORKDIR /work
ENV DOTNET_gcServer=0
USER attention
# The cluster port (Akka.Remote over TLS) and the data port (shard data, results, jobs).
EXPOSE 4550 4551
ENTRYPOINT ["/app/attention"]
CMD ["node"]

FROM runtime-base AS runtime-prebuilt
COPY publish/ /app/

FROM runtime-base AS runtime
COPY --from=build /app /app
