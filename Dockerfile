# The tractor image for users who build with Docker. It has the same layout as scripts/image.sh builds without
# a container engine: /usr/local/bin/tractor, the glibc libraries it links, passwd/group naming the nonroot
# user 65532, a writable /tmp; entrypoint tractor, so pods pass only the subcommand as args.
#   docker build -t tractor:dev .
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --locked --release -p tractor \
 && mkdir -p /rootfs/usr/local/bin /rootfs/etc /rootfs/tmp \
 && chmod 1777 /rootfs/tmp \
 && cp target/release/tractor /rootfs/usr/local/bin/tractor \
 && ldd target/release/tractor | awk '/=> \// {print $3} /^[[:space:]]*\/.*ld-linux/ {print $1}' \
    | while read -r lib; do mkdir -p "/rootfs$(dirname "$lib")" && cp -L "$lib" "/rootfs$lib"; done \
 && printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' \
    > /rootfs/etc/passwd \
 && printf '%s\n' 'root:x:0:' 'nonroot:x:65532:' > /rootfs/etc/group

FROM scratch
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/tractor"]
