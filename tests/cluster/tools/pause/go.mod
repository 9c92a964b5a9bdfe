// The real node's pause image: the process that holds each pod's namespaces. No registry can be
// reached here, so the test bed builds its own and tags it as the image the kubelet asks for.
module slipway.dev/testbed/pause

go 1.26.0
