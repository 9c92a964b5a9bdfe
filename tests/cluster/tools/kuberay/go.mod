// Wrapper module: pins KubeRay for the test bed. Its CRDs (RayJob, RayCluster, RayService) ship in the module;
// the test bed installs them so Slipway's RayJobs are validated by the real schema.
module slipway.dev/testbed/kuberay

go 1.26.0

require github.com/ray-project/kuberay/ray-operator v1.5.0
